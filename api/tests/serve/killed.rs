//! Nodes killed with `kill -9` mid-work: what they held (jobs, a webhook delivery, connected
//! users) is taken up by the others.

use std::time::Duration;

use sqlx::ConnectOptions;

use super::{call, server, Served};

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
