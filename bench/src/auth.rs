//! What checking a token costs: authenticated endpoints next to `/health`, same clients, same run.

use std::time::Instant;

use parley_api::http::Server;
use parley_api::{App, Config};
use parley_commands::password::PasswordHasher;
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;

use crate::http::{percentile, register, timed_load};
use crate::Scratch;

const CLIENTS: usize = 64;

/// Requests/s, p50 and p99 ms, and failures of `GET url` with `token`, for `seconds`.
async fn load(http: &reqwest::Client, url: &str, token: Option<&str>, seconds: u64) -> (f64, f64, f64, u64) {
    let (http, url, token) = (http.clone(), url.to_owned(), token.map(str::to_owned));
    let measured = timed_load(CLIENTS, seconds, move |_, _| {
        let mut req = http.get(&url);
        if let Some(token) = &token {
            req = req.bearer_auth(token);
        }
        async move {
            match req.send().await {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                _ => false,
            }
        }
    })
    .await;
    let (rate, all, failed) = measured.unwrap_or_default();
    (rate, percentile(&all, 0.5), percentile(&all, 0.99), failed)
}

pub async fn run(server: &PgConnectOptions, seconds: u64) -> anyhow::Result<()> {
    let scratch = Scratch::new(server, "auth").await?;
    let mut config = Config::new(scratch.options.to_url_lossy().to_string());
    config.pool_size = 32;
    let app = App::connect_with(&config, false, PasswordHasher::fast_insecure()).await?;
    let srv = Server::start(app, &crate::serving(config)).await?;
    let base = format!("http://{}", srv.addr);
    let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build()?;
    let (token, position) = register(&http, &base).await?;
    // Wait once for the read model, so every measured request finds it current.
    http.get(format!("{base}/api/v1/users/me"))
        .bearer_auth(&token)
        .header("x-min-position", position)
        .send()
        .await?;
    let key: serde_json::Value = http
        .post(format!("{base}/api/v1/api_keys"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "bench", "permissions": ["users.view"]}))
        .send()
        .await?
        .json()
        .await?;
    let secret = key["data"]["secret"].as_str().ok_or_else(|| anyhow::anyhow!("no key: {key}"))?.to_owned();
    let health = load(&http, &format!("{base}/health"), None, seconds).await;
    let permissions = load(&http, &format!("{base}/api/v1/permissions"), Some(&token), seconds).await;
    let by_key = load(&http, &format!("{base}/api/v1/permissions"), Some(&secret), seconds).await;
    let me = load(&http, &format!("{base}/api/v1/users/me"), Some(&token), seconds).await;
    println!();
    println!("auth: {CLIENTS} clients, {seconds} s each");
    for (name, (rate, p50, p99, failed)) in [
        ("GET /health (no token)", health),
        ("GET /api/v1/permissions (token only)", permissions),
        ("GET /api/v1/permissions (API key only)", by_key),
        ("GET /api/v1/users/me (token + read model)", me),
    ] {
        println!("  {name:<44} {rate:>8.0}/s  p50 {p50:>5.1} ms  p99 {p99:>5.1} ms  failures {failed}");
    }
    // The check itself, in isolation: signature, claims, revocation lookup, context. Warm: a
    // token seen before (a client presents one for up to 15 minutes); cold: first sight of each.
    let keys = parley_api::http::auth::JwtKeys::new(b"bench");
    let revocations = parley_api::live::revocations::Revocations::default();
    let roles = parley_api::live::roles::RoleDirectory::default();
    let check = |token: &str| -> anyhow::Result<()> {
        let claims = keys.verify(token).map_err(|e| anyhow::anyhow!(e.message))?;
        if revocations.is_revoked(claims.sid) {
            anyhow::bail!("revoked");
        }
        std::hint::black_box(parley_api::http::auth::Principal::from_claims(claims, &roles, None, None));
        Ok(())
    };
    let n = 200_000;
    let (user, account) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let roles_held = ["owner".to_owned()];
    let fresh: Vec<String> = (0..10_000)
        .map(|_| {
            keys.issue(user, account, uuid::Uuid::now_v7(), &roles_held, 1, Default::default()).map(|t| t.0)
        })
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let started = Instant::now();
    for token in &fresh {
        check(token)?;
    }
    let cold_us = started.elapsed().as_secs_f64() * 1e6 / fresh.len() as f64;
    let token = keys
        .issue(user, account, uuid::Uuid::now_v7(), &roles_held, 1, Default::default())
        .map_err(|e| anyhow::anyhow!(e.message))?
        .0;
    let started = Instant::now();
    for _ in 0..n {
        check(&token)?;
    }
    let check_us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    // CPU a /health request costs on this machine: all cores over its throughput.
    let cores = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1) as f64;
    let health_us = cores * 1e6 / health.0;
    println!(
        "  one token check (signature, claims, revocation, context): {check_us:.2} us of CPU \
         ({cold_us:.2} us the first time a token is seen)"
    );
    println!(
        "  = {:.1}% of the CPU a /health request costs here ({health_us:.1} us) (target < 10%)",
        check_us / health_us * 100.0
    );
    println!(
        "  end to end, /permissions (token + a 1 KiB registry) vs /health: {:.1}% fewer requests/s",
        (1.0 - permissions.0 / health.0) * 100.0
    );
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(parley_commands::tokens::hash(std::hint::black_box(&secret)));
    }
    let key_us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!(
        "  an API key's check is a SHA-256 ({key_us:.2} us) and two map lookups; end to end, /permissions by \
         key vs by token: {:+.1}% requests/s",
        (by_key.0 / permissions.0 - 1.0) * 100.0
    );
    srv.stop().await;
    scratch.drop_db().await
}
