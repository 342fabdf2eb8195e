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
        let database = format!("parley_test_{}", uuid::Uuid::now_v7().simple());
        let url = server().database(&database).to_url_lossy().to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
            .arg("serve")
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

/// A node is killed (`kill -9`) while it runs jobs: another node runs them within 30 s, and each
/// completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_of_a_killed_node_run_elsewhere_within_30_seconds() {
    use std::sync::Arc;

    use parley_jobs::{JobQueue, NewJob, SystemClock, Worker, WorkerOptions};

    let mut served = Served::start(&[("PARLEY_JWT_SECRET", "serve-test-secret")]).await;
    let url = server().database(&served.database).to_url_lossy().to_string();
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&url).await.unwrap();
    let queue = JobQueue::new(pool.clone(), Arc::new(SystemClock));
    let mut ids = Vec::new();
    for _ in 0..20 {
        let job = NewJob::new(parley_commands::jobs::NOOP, serde_json::json!({"sleep_ms": 60_000}));
        ids.push(queue.enqueue_now(&job).await.unwrap().unwrap());
    }
    // Wait until the node runs them (its leases show it), then kill it.
    let running = || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM jobs WHERE state = 'running' AND id = ANY($1)")
                .bind(&ids)
                .fetch_one(&pool)
                .await
                .unwrap();
        n
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while running().await < 10 {
        assert!(std::time::Instant::now() < deadline, "the node never ran the jobs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = served.child.id().unwrap();
    let killed = std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status().unwrap();
    assert!(killed.success());
    let _ = served.child.wait().await;
    let killed_at = std::time::Instant::now();
    // Another node, with short jobs this time: it must wait for the dead node's leases.
    sqlx::query("UPDATE jobs SET args = '{}' WHERE id = ANY($1)").bind(&ids).execute(&pool).await.unwrap();
    let handlers = parley_commands::jobs::handlers(pool.clone(), queue.clone());
    let options = WorkerOptions { rescue_every: Duration::from_secs(1), ..WorkerOptions::default() };
    let worker = Worker::new(queue.clone(), handlers, options);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running_worker = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let completed = || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM jobs WHERE state = 'completed' AND id = ANY($1)")
                .bind(&ids)
                .fetch_one(&pool)
                .await
                .unwrap();
        n
    };
    while completed().await < 20 {
        if killed_at.elapsed() >= Duration::from_secs(30) {
            let states: Vec<(String, i32, Option<chrono::DateTime<chrono::Utc>>, serde_json::Value)> =
                sqlx::query_as(
                    "SELECT state, attempt, lease_expires_at, errors FROM jobs WHERE id = ANY($1)",
                )
                .bind(&ids)
                .fetch_all(&pool)
                .await
                .unwrap();
            panic!("not every job ran again within 30 s: {states:?} (now {})", chrono::Utc::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = killed_at.elapsed();
    let _ = stop.send(());
    running_worker.await.unwrap();
    // Each ran to completion once: the killed attempt is recorded as lost, the next completed.
    let rows: Vec<(i32, serde_json::Value)> =
        sqlx::query_as("SELECT attempt, errors FROM jobs WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&pool)
            .await
            .unwrap();
    for (attempt, errors) in &rows {
        let lost = errors.as_array().map_or(0, Vec::len);
        assert_eq!(
            *attempt as usize,
            lost + 1,
            "every attempt but the last was lost with its node: {errors}"
        );
    }
    println!("killed node's jobs ran elsewhere after {took:?}");
    pool.close().await;
    served.stop().await;
}
