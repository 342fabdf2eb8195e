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

/// A node is killed (`kill -9`) while a webhook delivery is in flight (the receiver holds the
/// request open): another node delivers it again once the lease runs out, with the same
/// `webhook-id`, and the specification's library verifies both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_cut_off_by_kill_9_is_delivered_again_by_another_node_with_the_same_webhook_id() {
    use axum::http::HeaderMap;
    use tokio::sync::mpsc;

    // The receiver: the first request hangs, later ones are answered 204.
    let (got, mut received) = mpsc::unbounded_channel::<(HeaderMap, axum::body::Bytes)>();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (got, seen) = (got.clone(), seen.clone());
            async move {
                let _ = got.send((headers, body));
                if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    std::future::pending::<()>().await;
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let env = [("PARLEY_JWT_SECRET", "serve-test-secret"), ("PARLEY_WEBHOOKS_ALLOW_PRIVATE", "true")];
    let mut first = Served::start(&env).await;
    let http = reqwest::Client::new();
    let register = serde_json::json!({
        "name": "Owner", "email": "owner@example.com", "password": "correct horse battery", "account_name": "Acme"
    });
    let (status, registered) = call(&http, &first.addr, "/auth/register", None, register).await;
    assert_eq!(status, 201, "{registered}");
    let token = registered["data"]["access_token"].as_str().unwrap().to_owned();
    let subscribe = serde_json::json!({"url": hook_url, "event_types": ["MessagePosted"]});
    let (status, subscribed) =
        call(&http, &first.addr, "/webhooks/subscriptions", Some(&token), subscribe).await;
    assert_eq!(status, 201, "{subscribed}");
    let secret = subscribed["data"]["secret"].as_str().unwrap().to_owned();
    let group = serde_json::json!({"kind": "group", "title": "General", "member_ids": []});
    let (status, conversation) = call(&http, &first.addr, "/conversations", Some(&token), group).await;
    assert_eq!(status, 201, "{conversation}");
    let messages = format!("/conversations/{}/messages", conversation["data"]["id"].as_str().unwrap());
    let (status, posted) =
        call(&http, &first.addr, &messages, Some(&token), serde_json::json!({"body": "hi"})).await;
    assert_eq!(status, 201, "{posted}");

    async fn next(
        received: &mut mpsc::UnboundedReceiver<(HeaderMap, axum::body::Bytes)>,
    ) -> (HeaderMap, axum::body::Bytes) {
        let wait = tokio::time::timeout(Duration::from_secs(40), received.recv());
        wait.await.expect("a delivery in time").expect("the receiver runs")
    }
    let (headers, body) = next(&mut received).await;
    let verifier = standardwebhooks::Webhook::new(&secret).unwrap();
    verifier.verify(&body, &headers).expect("the first delivery verifies");
    let pid = first.child.id().unwrap();
    assert!(std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status().unwrap().success());
    let _ = first.child.wait().await;
    let killed_at = std::time::Instant::now();

    let second = Served::start_on(&first.database, &env).await;
    let (again_headers, again_body) = next(&mut received).await;
    verifier.verify(&again_body, &again_headers).expect("the delivery again verifies");
    assert_eq!(again_headers["webhook-id"], headers["webhook-id"], "the same webhook-id");
    assert_eq!(again_body, body, "the same body");
    assert!(killed_at.elapsed() < Duration::from_secs(40), "delivered again after {:?}", killed_at.elapsed());
    println!("delivered again {:?} after the kill", killed_at.elapsed());
    second.stop().await;
}

/// A user connected to a node that is killed (`kill -9`) goes offline on the other node once the
/// presence TTL runs out (no node closed the connection: the sweep of stale rows finds it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_users_go_offline_on_the_other_node_within_the_ttl() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let ttl = 3;
    let env = [("PARLEY_JWT_SECRET", "serve-test-secret"), ("PARLEY_PRESENCE_TTL_SECONDS", "3")];
    let mut first = Served::start(&env).await;
    let second = Served::start_on(&first.database, &env).await;
    let http = reqwest::Client::new();
    let register = serde_json::json!({
        "name": "Alice", "email": "alice@example.com", "password": "correct horse battery", "account_name": "Acme"
    });
    let (_, alice) = call(&http, &first.addr, "/auth/register", None, register).await;
    let alice_token = alice["data"]["access_token"].as_str().unwrap().to_owned();
    let alice_id = alice["data"]["user"]["id"].as_str().unwrap().to_owned();
    let invite = serde_json::json!({"email": "bob@example.com", "role": "member"});
    let (_, invitation) = call(&http, &first.addr, "/invitations", Some(&alice_token), invite).await;
    let join = serde_json::json!({
        "name": "Bob", "email": "bob@example.com", "password": "correct horse battery",
        "invitation_token": invitation["data"]["token"]
    });
    let (_, bob) = call(&http, &first.addr, "/auth/register", None, join).await;
    let bob_token = bob["data"]["access_token"].as_str().unwrap().to_owned();
    let group = serde_json::json!({"kind": "group", "title": "G", "member_ids": [bob["data"]["user"]["id"]]});
    let (status, group) = call(&http, &first.addr, "/conversations", Some(&alice_token), group).await;
    assert_eq!(status, 201, "{group}");
    let settled = http
        .get(format!("http://{}/api/v1/conversations", second.addr))
        .bearer_auth(&bob_token)
        .header("x-min-position", group["meta"]["position"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(settled.status(), 200);

    let connect = |addr: &str, token: &str| {
        let url = format!("ws://{addr}/api/v1/cable?token={token}");
        async move { tokio_tungstenite::connect_async(url).await.expect("websocket connects").0 }
    };
    let mut bob_ws = connect(&second.addr, &bob_token).await;
    bob_ws
        .send(Message::Text(
            serde_json::json!({"command": "subscribe", "channel": "user"}).to_string().into(),
        ))
        .await
        .unwrap();
    /// Reads frames until the roster (`want` = "roster") or Alice's presence `want`.
    async fn presence<S>(ws: &mut S, alice_id: &str, want: &str)
    where
        S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let msg = tokio::time::timeout_at(deadline, ws.next()).await.expect("the frame in time");
            let Some(Ok(Message::Text(text))) = msg else { continue };
            let frame: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            let wanted = match want {
                "roster" => frame["type"] == "presence_roster",
                _ => frame["type"] == "presence" && frame["user_id"] == alice_id && frame["status"] == want,
            };
            if wanted {
                return;
            }
        }
    }
    presence(&mut bob_ws, &alice_id, "roster").await;
    let _alice_ws = connect(&first.addr, &alice_token).await;
    presence(&mut bob_ws, &alice_id, "online").await;
    let pid = first.child.id().unwrap();
    assert!(std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status().unwrap().success());
    let _ = first.child.wait().await;
    let killed_at = std::time::Instant::now();
    presence(&mut bob_ws, &alice_id, "offline").await;
    let took = killed_at.elapsed();
    println!("offline on the other node {took:?} after the kill (TTL {ttl} s)");
    assert!(took < Duration::from_secs_f64(ttl as f64 * 1.5), "offline after {took:?}");
    second.stop().await;
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

/// A `parley` run with nothing configured but the private cluster: no DATABASE_URL, a data
/// folder of its own, a free port.
fn embedded(data_dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_parley"));
    command
        .arg("serve")
        .env_remove("DATABASE_URL")
        .env("PARLEY_EMBEDDED_POSTGRES", "true")
        .env("PARLEY_DATA_DIR", data_dir)
        .env("PARLEY_BIND", "127.0.0.1:0")
        .env("PARLEY_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

fn scratch_dir(purpose: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("parley-{purpose}-{}", uuid::Uuid::now_v7().simple()))
}

/// With PARLEY_EMBEDDED_POSTGRES and an empty data folder, `parley serve` creates and starts a
/// private cluster, serves (a user registers and posts), and on Ctrl-C exits 0 leaving no
/// PostgreSQL process of that cluster behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nothing_configured_serve_runs_on_a_private_cluster_and_stops_it_on_ctrl_c() {
    let data_dir = scratch_dir("embedded");
    let mut child = embedded(&data_dir).spawn().expect("parley starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    let addr = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            said.push(line.clone());
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if entry["message"] == "parley is listening" {
                return entry["addr"].as_str().unwrap().to_owned();
            }
        }
        panic!("parley exited before listening: {said:#?}");
    })
    .await
    .expect("parley listens within two minutes");
    assert!(
        said.iter().any(|l| l.contains("private PostgreSQL") && l.contains(&*data_dir.to_string_lossy())),
        "it says where the data is: {said:#?}"
    );
    let rest = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push(line);
        }
        rest
    });

    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http.get(format!("http://{addr}/ready")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "/ready never answered 200");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let register = serde_json::json!({
        "name": "Ann", "email": "ann@example.com", "password": "correct horse battery", "account_name": "Acme"
    });
    let (status, registered) = call(&http, &addr, "/auth/register", None, register).await;
    assert_eq!(status, 201, "{registered}");
    let token = registered["data"]["access_token"].as_str().unwrap().to_owned();
    let group = serde_json::json!({"kind": "group", "title": "General", "member_ids": []});
    let (status, conversation) = call(&http, &addr, "/conversations", Some(&token), group).await;
    assert_eq!(status, 201, "{conversation}");
    let messages = format!("/conversations/{}/messages", conversation["data"]["id"].as_str().unwrap());
    let (status, posted) =
        call(&http, &addr, &messages, Some(&token), serde_json::json!({"body": "hi"})).await;
    assert_eq!(status, 201, "{posted}");

    let postmaster: u32 = std::fs::read_to_string(data_dir.join("postgres/postmaster.pid"))
        .expect("the cluster runs")
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(std::path::Path::new(&format!("/proc/{postmaster}")).exists());
    let pid = child.id().unwrap();
    let interrupted = std::process::Command::new("kill").arg("-INT").arg(pid.to_string()).status().unwrap();
    assert!(interrupted.success());
    let exited =
        tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("it exits").unwrap();
    let rest = rest.await.unwrap();
    assert!(exited.success(), "exit {exited}: {rest:#?}");
    assert!(!data_dir.join("postgres/postmaster.pid").exists(), "the cluster was shut down cleanly");
    // `pg_ctl stop -w` returns once the pid file is gone, moments before the postmaster exits
    // and its parent (init, here) reaps it: gone, or a zombie, within seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{postmaster}/status")).unwrap_or_default();
        if status.is_empty() || status.lines().any(|l| l.starts_with("State:") && l.contains('Z')) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the postmaster still runs: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leftovers = std::process::Command::new("pgrep").arg("-f").arg(&data_dir).output().unwrap();
    assert!(leftovers.stdout.is_empty(), "{}", String::from_utf8_lossy(&leftovers.stdout));
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// A data folder that cannot be created (its parent is a file): a clear message, a non-zero
/// exit, nothing written.
#[tokio::test]
async fn an_unusable_data_folder_is_refused_with_a_clear_message() {
    let file = scratch_dir("not-a-dir");
    std::fs::write(&file, b"a file").unwrap();
    let data_dir = file.join("parley");
    let out = embedded(&data_dir).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("data folder") && stderr.contains(&*data_dir.to_string_lossy()), "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), b"a file");
    let _ = std::fs::remove_file(&file);
}

/// No PostgreSQL server programs: one line saying how to get them, a non-zero exit.
#[tokio::test]
async fn without_server_programs_it_says_how_to_get_them() {
    let data_dir = scratch_dir("no-binaries");
    let out = embedded(&data_dir).env("PARLEY_POSTGRES_BINDIR", "/nonexistent").output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("apt-get install postgresql") && stderr.contains("brew install postgresql"),
        "{stderr}"
    );
    assert!(!data_dir.exists(), "nothing written");
}

/// Three `parley serve` processes and an API-only one (`--no-workers`) on one database, clients
/// spread over them: every subscriber, whatever its node, receives the same events in the same
/// order; a node is killed (`kill -9`) mid-run; the others keep accepting posts, the projections
/// are taken over by a surviving node (a read waiting for the last post's position answers within
/// its 5 s), and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_and_an_api_only_one_agree_on_every_event_and_survive_a_kill() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    const EACH_PHASE: usize = 30;
    let env = [("PARLEY_JWT_SECRET", "nodes-test-secret"), ("PARLEY_AUTH_RATE_PER_MINUTE", "100000")];
    let mut a = Served::start(&env).await;
    let b = Served::start_on(&a.database, &env).await;
    let c = Served::start_on(&a.database, &env).await;
    let api_only = Served::start_with_args(&a.database, &env, &["--no-workers"]).await;
    let http = reqwest::Client::new();
    let register = serde_json::json!({
        "name": "Ann", "email": "ann@example.com", "password": "correct horse battery", "account_name": "Acme"
    });
    let (status, ann) = call(&http, &b.addr, "/auth/register", None, register).await;
    assert_eq!(status, 201, "{ann}");
    let token = ann["data"]["access_token"].as_str().unwrap().to_owned();
    let group = serde_json::json!({"kind": "group", "title": "Nodes", "member_ids": []});
    let (status, group) = call(&http, &b.addr, "/conversations", Some(&token), group).await;
    assert_eq!(status, 201, "{group}");
    let conversation = group["data"]["id"].as_str().unwrap().to_owned();

    // A subscriber on every node, from the conversation's start.
    let mut subscribers = Vec::new();
    for (name, addr) in [("a", &a.addr), ("b", &b.addr), ("c", &c.addr), ("api", &api_only.addr)] {
        let url = format!("ws://{addr}/api/v1/cable?token={token}");
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("connects");
        let subscribe = serde_json::json!({"command": "subscribe", "channel": "conversation", "id": conversation, "after": "0"});
        ws.send(Message::Text(subscribe.to_string().into())).await.unwrap();
        let want = if name == "a" { EACH_PHASE } else { 2 * EACH_PHASE };
        subscribers.push((
            name,
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                while seen.len() < want {
                    let Ok(Some(Ok(Message::Text(text)))) =
                        tokio::time::timeout_at(deadline, ws.next()).await
                    else {
                        break;
                    };
                    let frame: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                    if frame["type"] == "event" && frame["event"]["event_type"] == "MessagePosted" {
                        seen.push(frame["event"]["data"]["message_id"].as_str().unwrap().to_owned());
                    }
                }
                seen
            }),
        ));
    }

    let post = |addr: String, n: usize| {
        let (http, token, conversation) = (http.clone(), token.clone(), conversation.clone());
        async move {
            let body = serde_json::json!({"body": format!("message {n}")});
            let path = format!("/conversations/{conversation}/messages");
            let (status, answer) = call(&http, &addr, &path, Some(&token), body).await;
            assert_eq!(status, 201, "post {n} on {addr}: {answer}");
            (
                answer["data"]["id"].as_str().unwrap().to_owned(),
                answer["meta"]["position"].as_str().unwrap().to_owned(),
            )
        }
    };
    let mut acknowledged = Vec::new();
    let everyone = [a.addr.clone(), b.addr.clone(), c.addr.clone(), api_only.addr.clone()];
    for n in 0..EACH_PHASE {
        acknowledged.push(post(everyone[n % 4].clone(), n).await);
    }
    // The first node dies (it started first: it most likely holds the projections' leases).
    let pid = a.child.id().unwrap();
    assert!(std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status().unwrap().success());
    let _ = a.child.wait().await;
    let survivors = [b.addr.clone(), c.addr.clone(), api_only.addr.clone()];
    for n in EACH_PHASE..2 * EACH_PHASE {
        acknowledged.push(post(survivors[n % 3].clone(), n).await);
    }

    // The read side followed: a read waiting for the last post answers (it waits at most 5 s).
    let last = acknowledged.last().unwrap().1.clone();
    let started = std::time::Instant::now();
    let read = http
        .get(format!("http://{}/api/v1/conversations/{conversation}/messages?limit=100", api_only.addr))
        .bearer_auth(&token)
        .header("x-min-position", &last)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "the projections were taken over within the read's 5 s");
    println!("the read side had the last post {:?} after it was answered", started.elapsed());
    let listed: serde_json::Value = read.json().await.unwrap();
    let mut ids: Vec<String> =
        listed["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    ids.reverse();
    let acknowledged_ids: Vec<String> = acknowledged.iter().map(|(id, _)| id.clone()).collect();
    let mut sorted = acknowledged_ids.clone();
    sorted.sort();
    let mut listed_sorted = ids.clone();
    listed_sorted.sort();
    assert_eq!(listed_sorted, sorted, "nothing acknowledged was lost");

    // Every surviving subscriber got every post, in one and the same order; the killed node's got
    // the first phase in that order too.
    let mut orders = Vec::new();
    for (name, task) in subscribers {
        let seen = task.await.unwrap();
        orders.push((name, seen));
    }
    let reference = orders.iter().find(|(n, _)| *n == "b").unwrap().1.clone();
    assert_eq!(reference.len(), 2 * EACH_PHASE, "node b's subscriber got every post");
    let mut in_order = reference.clone();
    in_order.sort();
    assert_eq!(in_order, sorted);
    for (name, seen) in &orders {
        if *name == "a" {
            assert_eq!(seen[..], reference[..seen.len()], "the killed node's subscriber, until it died");
        } else {
            assert_eq!(seen, &reference, "subscriber on {name}: the same events in the same order");
        }
    }
    let _ = (c.child.id(), api_only.child.id());
    api_only.stop().await;
    c.stop().await;
    b.stop().await;
}
