//! `parley serve` as an operator starts it: the real binary, configured only through its
//! environment, on a database of its own that it creates and migrates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod embedded;
mod killed;
mod nodes;

/// The PostgreSQL server the tests use (`DATABASE_URL`; its database name is ignored).
fn server() -> PgConnectOptions {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    PgConnectOptions::from_str(&url).expect("DATABASE_URL parses").database("postgres")
}

/// A running `parley serve` and the address it listens on (from its own log).
struct Served {
    child: Child,
    addr: String,
    database: String,
}

impl Served {
    async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_on(&format!("parley_test_{}", uuid::Uuid::now_v7().simple()), env).await
    }

    /// Another node on `database`.
    async fn start_on(database: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with_args(database, env, &[]).await
    }

    /// Another node on `database`, `parley serve` given `args` (`--no-workers`).
    async fn start_with_args(database: &str, env: &[(&str, &str)], args: &[&str]) -> Self {
        let database = database.to_owned();
        let url = server().database(&database).to_url_lossy().to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
            .arg("serve")
            .args(args)
            .env("DATABASE_URL", url)
            .env("PARLEY_BIND", "127.0.0.1:0")
            .env("PARLEY_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("parley starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                if entry["message"] == "parley is listening" {
                    return entry["addr"].as_str().unwrap().to_owned();
                }
            }
            panic!("parley exited before listening");
        })
        .await
        .expect("parley listens within a minute");
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, addr, database }
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
        let mut admin = PgConnection::connect_with(&server()).await.unwrap();
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database);
        sqlx::query(&drop).execute(&mut admin).await.unwrap();
    }
}

/// Calls the served API; the answer's status and body.
async fn call(
    http: &reqwest::Client,
    addr: &str,
    path: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut req = http.post(format!("http://{addr}/api/v1{path}")).json(&body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test]
async fn parley_serve_takes_its_login_rate_limit_from_the_environment() {
    let served =
        Served::start(&[("PARLEY_AUTH_RATE_PER_MINUTE", "3"), ("PARLEY_JWT_SECRET", "serve-test-secret")])
            .await;
    let http = reqwest::Client::new();
    let ready = http.get(format!("http://{}/ready", served.addr)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let answer = http
            .post(format!("http://{}/api/v1/auth/login", served.addr))
            .json(&serde_json::json!({"email": "nobody@example.com", "password": "not the password"}))
            .send()
            .await
            .unwrap();
        statuses.push(answer.status().as_u16());
        if answer.status() == 429 {
            assert!(answer.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(statuses, [401, 401, 401, 429], "three requests to /auth/* a minute, then 429");
    served.stop().await;
}

/// `parley demo` prints how to open the dashboard and keeps traffic going until told to stop.
#[tokio::test]
async fn parley_demo_prints_its_dashboard_and_keeps_traffic_going_until_stopped() {
    let database = format!("parley_test_{}", uuid::Uuid::now_v7().simple());
    let url = server().database(&database).to_url_lossy().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["demo", "--rate", "40"])
        .env("DATABASE_URL", url)
        .env("PARLEY_BIND", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("parley starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let dashboard = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.trim().strip_prefix("dashboard: ") {
                return url.to_owned();
            }
        }
        panic!("the demo ended before printing its dashboard");
    })
    .await
    .expect("the demo starts within a minute");
    let (base, key) = dashboard.split_once("/dashboard?token=").unwrap();
    assert!(key.starts_with("pk_"), "{dashboard}");
    let http = reqwest::Client::new();
    let page = http.get(format!("{base}/dashboard")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    // Posts keep coming: the key sees the log grow.
    let count = |http: reqwest::Client| {
        let (base, key) = (base.to_owned(), key.to_owned());
        async move {
            let a: serde_json::Value = http
                .get(format!("{base}/api/v1/audit/events?event_type=MessagePosted&limit=1000"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            a["data"].as_array().map_or(0, Vec::len)
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let first = count(http.clone()).await;
    loop {
        let now = count(http.clone()).await;
        if now > first + 5 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the demo's traffic stalled at {now}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // SIGTERM: it stops cleanly.
    let pid = child.id().unwrap();
    assert!(std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    let mut admin = PgConnection::connect_with(&server()).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}
