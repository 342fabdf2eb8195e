//! Webhooks: delivery latency from a message's commit (its POST answered) to the receiver, at a
//! steady rate of events to 10 subscriptions; then deliveries/s through one server (a recovery
//! of every event, to every subscription) next to no-op jobs/s through the same server's worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use parley_api::http::Server;
use parley_api::{App, Config};
use parley_commands::password::PasswordHasher;
use parley_jobs::NewJob;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;
use tokio::sync::mpsc;

use crate::http::{percentile, register};
use crate::Scratch;

const SUBSCRIPTIONS: usize = 10;
const CONVERSATIONS: usize = 10;

/// Every delivery the receiver got: the message it carried and when it arrived.
async fn receive(State(arrived): State<mpsc::UnboundedSender<(String, Instant)>>, body: Bytes) -> StatusCode {
    let at = Instant::now();
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b["data"]["message_id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let _ = arrived.send((message, at));
    StatusCode::NO_CONTENT
}

async fn api(http: &reqwest::Client, url: String, token: &str, body: Value) -> anyhow::Result<Value> {
    let r = http.post(url).bearer_auth(token).json(&body).send().await?;
    anyhow::ensure!(r.status().is_success(), "{}: {}", r.status(), r.text().await?);
    Ok(r.json().await?)
}

/// Waits until `n` deliveries arrived (or 300 s passed); returns them.
async fn collect(
    arrived: &mut mpsc::UnboundedReceiver<(String, Instant)>,
    n: usize,
) -> Vec<(String, Instant)> {
    let mut got = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while got.len() < n {
        match tokio::time::timeout_at(deadline, arrived.recv()).await {
            Ok(Some(d)) => got.push(d),
            _ => break,
        }
    }
    got
}

pub async fn run(server: &PgConnectOptions, seconds: u64, rate: u64) -> anyhow::Result<()> {
    let scratch = Scratch::new(server, "webhooks").await?;
    let mut config = Config::new(scratch.options.to_url_lossy().to_string());
    config.pool_size = 48;
    config.webhooks_allow_private = true;
    let app = App::connect_with(&config, false, PasswordHasher::fast_insecure()).await?;
    let srv = Server::start(app.clone(), &crate::serving(config)).await?;
    let base = format!("http://{}/api/v1", srv.addr);
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;

    let (arrivals, mut arrived) = mpsc::unbounded_channel();
    let receiver = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(arrivals);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    let receiving = tokio::spawn(async move {
        let _ = axum::serve(listener, receiver).await;
    });

    let (token, _) = register(&http, base.trim_end_matches("/api/v1")).await?;
    let mut conversations = Vec::new();
    for _ in 0..CONVERSATIONS {
        let c = api(
            &http,
            format!("{base}/conversations"),
            &token,
            json!({"kind": "group", "title": "bench", "member_ids": []}),
        )
        .await?;
        conversations.push(c["data"]["id"].as_str().unwrap_or_default().to_owned());
    }
    let mut subscriptions = Vec::new();
    for _ in 0..SUBSCRIPTIONS {
        let s = api(
            &http,
            format!("{base}/webhooks/subscriptions"),
            &token,
            json!({"url": hook, "event_types": ["MessagePosted"]}),
        )
        .await?;
        subscriptions.push(s["data"]["id"].as_str().unwrap_or_default().to_owned());
    }
    println!();
    println!("webhooks: {rate} messages/s for {seconds} s, each delivered to {SUBSCRIPTIONS} subscriptions on loopback");

    // Latency: a steady rate of posts; from each POST's answer (its commit) to each arrival.
    let started = chrono::Utc::now();
    let committed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let n = (rate * seconds) as usize;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let mut posting = tokio::task::JoinSet::new();
    for i in 0..n {
        tick.tick().await;
        let (http, token, committed) = (http.clone(), token.clone(), committed.clone());
        let url = format!("{base}/conversations/{}/messages", conversations[i % CONVERSATIONS]);
        posting.spawn(async move {
            let posted = api(&http, url, &token, json!({"body": format!("message {i}")})).await?;
            let at = Instant::now();
            let id = posted["data"]["id"].as_str().unwrap_or_default().to_owned();
            if let Ok(mut committed) = committed.lock() {
                committed.insert(id, at);
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = posting.join_next().await {
        done??;
    }
    let got = collect(&mut arrived, n * SUBSCRIPTIONS).await;
    let committed = committed.lock().map(|c| c.clone()).unwrap_or_default();
    let mut latencies: Vec<Duration> = got
        .iter()
        .filter_map(|(message, at)| committed.get(message).map(|c| at.saturating_duration_since(*c)))
        .collect();
    latencies.sort();
    println!(
        "  delivered {} of {} ({} events x {SUBSCRIPTIONS}); commit to receiver p50 {:.1} ms, p99 {:.1} ms",
        got.len(),
        n * SUBSCRIPTIONS,
        n,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );

    // Throughput: every event again to every subscription (a recovery), next to as many no-op
    // jobs through the same worker.
    let total = n * SUBSCRIPTIONS;
    let t = Instant::now();
    for s in &subscriptions {
        api(&http, format!("{base}/webhooks/subscriptions/{s}/recover"), &token, json!({"since": started}))
            .await?;
    }
    let again = collect(&mut arrived, total).await;
    let deliveries = again.len() as f64 / t.elapsed().as_secs_f64();
    let noops: Vec<NewJob> =
        (0..total).map(|_| NewJob::new(parley_commands::jobs::NOOP, json!({}))).collect();
    let t = Instant::now();
    let mut conn = app.store.pool().acquire().await?;
    let (before,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM jobs WHERE kind = 'platform.noop' AND state = 'completed'")
            .fetch_one(&mut *conn)
            .await?;
    app.jobs.enqueue_many(&mut conn, &noops).await?;
    app.jobs.wake().await;
    loop {
        let (done,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM jobs WHERE kind = 'platform.noop' AND state = 'completed'")
                .fetch_one(&mut *conn)
                .await?;
        if (done - before) as usize >= total || t.elapsed() > Duration::from_secs(300) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let jobs = total as f64 / t.elapsed().as_secs_f64();
    drop(conn);
    println!("  deliveries/s through one server (a recovery of {total})   {deliveries:>8.0}");
    println!("  no-op jobs/s through the same worker ({total})            {jobs:>8.0}");
    println!("  ratio                                                     {:>8.2}", deliveries / jobs);

    let (p50, p99): (f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) FROM webhook_attempts",
    )
    .fetch_one(app.store.pool())
    .await?;
    println!("  attempt duration (request sent to answer read): p50 {p50:.0} ms, p99 {p99:.0} ms");

    receiving.abort();
    srv.stop().await;
    scratch.drop_db().await
}
