//! Queries on a streaming replica (`DATABASE_REPLICA_URL`), against a real one: a private primary
//! the test starts, a `pg_basebackup` of it streaming on another port. Reads go to the replica
//! and read-your-writes holds there; a replica whose replay stopped is skipped once it is more
//! than the allowed lag behind (and a read waiting there for `X-Min-Position` is answered by the
//! primary); a query a recovery conflict cancels is answered by the primary; a replica that stops
//! is skipped at once and used again when it is back.

use std::time::{Duration, Instant};

use parley_api::{App, Config};
use parley_commands::password::PasswordHasher;
use parley_tests::cluster::PrivateCluster;
use parley_tests::server::serving;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

struct Node {
    base: String,
    http: reqwest::Client,
    token: String,
}

impl Node {
    async fn get(&self, path: &str, min_position: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.get(format!("{}/api/v1{path}", self.base)).bearer_auth(&self.token);
        if let Some(min) = min_position {
            req = req.header("X-Min-Position", min);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Posts `text`, returning the answer's position.
    async fn post(&self, conversation: &str, text: &str) -> String {
        let res = self
            .http
            .post(format!("{}/api/v1/conversations/{conversation}/messages", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"body": text}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap();
        body["meta"]["position"].as_str().unwrap().to_owned()
    }

    async fn texts(&self, conversation: &str, min_position: Option<&str>) -> Vec<String> {
        let (status, body) = self.get(&format!("/conversations/{conversation}/messages"), min_position).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].as_array().unwrap().iter().map(|m| m["body"].as_str().unwrap().to_owned()).collect()
    }

    /// The replica as `/admin/projections` shows it for the messages read model.
    async fn replica(&self) -> Value {
        let (status, body) = self.get("/admin/projections", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let messages = body["data"].as_array().unwrap().iter().find(|p| p["name"] == "messages").unwrap();
        messages["replica"].clone()
    }

    async fn metric(&self, line_start: &str) -> f64 {
        let text =
            self.http.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap();
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Polls (the follower looks every 250 ms) until the replica's status is `wanted`.
    async fn until_replica(&self, wanted: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let replica = self.replica().await;
            if replica["status"] == wanted {
                return replica;
            }
            assert!(Instant::now() < deadline, "the replica was not {wanted} within {within:?}: {replica}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls `sql` on `conn` until it answers true. On the standby, replay may cancel the poll itself
/// (a recovery conflict with the test's own statement): that counts as not yet.
async fn until(conn: &mut PgConnection, sql: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((true,)) = sqlx::query_as::<_, (bool,)>(sql).fetch_one(&mut *conn).await {
            return;
        }
        assert!(Instant::now() < deadline, "{what} within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until a connection of `application` waits on a lock.
async fn waits_on_a_lock(conn: &mut PgConnection, application: &str, what: &str) {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
         WHERE application_name = '{application}' AND wait_event_type = 'Lock')"
    );
    until(conn, &sql, what).await;
}

/// Runs `sql` on the standby, again when replay cancelled it (a recovery conflict with the test's
/// own statement, not the server's).
async fn on_standby(conn: &mut PgConnection, sql: &str) {
    for _ in 0..50 {
        match sqlx::query(sql).execute(&mut *conn).await {
            Ok(_) => return,
            Err(e) if parley_api::replica::is_refused_by_standby(&e) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{sql}: {e}"),
        }
    }
    panic!("{sql}: cancelled by replay 50 times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_read_a_streaming_replica_and_fall_back_to_the_primary() {
    let primary = PrivateCluster::start().await;
    let mut config = serving(Config::new(primary.url("parley")));
    config.pool_size = 10;
    // Migrated on the primary before the copy is taken, so the standby starts with the schema.
    let app = App::connect_with(&config, true, PasswordHasher::fast_insecure()).await.expect("app connects");
    drop(app);
    // Replay waits 100 ms at most for a query in its way before cancelling it.
    let standby = PrivateCluster::standby_of(&primary, "-c max_standby_streaming_delay=100ms").await;
    config.database_replica_url = Some(parley_api::config::Secret::new(standby.url("parley")));
    config.replica_max_lag_seconds = 3.0;
    let app = App::connect_with(&config, false, PasswordHasher::fast_insecure()).await.expect("app connects");
    let server = parley_api::http::Server::start(app, &config).await.expect("server starts");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let base = format!("http://{}", server.addr);
    let registered: Value = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"name": "Ann", "email": "ann@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let node = Node { base, http, token: registered["data"]["access_token"].as_str().unwrap().to_owned() };
    let started: Value = node
        .http
        .post(format!("{}/api/v1/conversations", node.base))
        .bearer_auth(&node.token)
        .json(&json!({"kind": "group", "title": "Replicated"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conversation = started["data"]["id"].as_str().unwrap().to_owned();
    let up = node.until_replica("up", Duration::from_secs(10)).await;
    assert!(up["lag_seconds"].as_f64().unwrap() < 3.0, "{up}");
    let replica_reads = r#"parley_query_reads_total{target="replica"}"#;
    let primary_reads = r#"parley_query_reads_total{target="primary"}"#;

    // Read-your-writes on the replica: each post is in the next read given its position.
    let before = node.metric(replica_reads).await;
    for n in 0..20 {
        let position = node.post(&conversation, &format!("r{n}")).await;
        let texts = node.texts(&conversation, Some(&position)).await;
        assert!(texts.contains(&format!("r{n}")), "r{n} read back from the replica: {texts:?}");
    }
    assert!(node.metric(replica_reads).await - before >= 20.0, "the reads went to the replica");
    // Users carry presence, an unlogged table a standby refuses to read: the primary answers.
    let fallbacks = node.metric("parley_replica_fallbacks_total").await;
    let (status, users) = node.get("/users", None).await;
    assert_eq!(status, StatusCode::OK, "{users}");
    assert_eq!(users["data"][0]["email"], "ann@example.com");
    assert!(node.metric("parley_replica_fallbacks_total").await > fallbacks, "refused by the standby first");

    // The replica's replay paused: a read without a position shows the replica's older copy
    // (which is how we know it read there), one with the position waits there up to the allowed
    // lag and is answered by the primary; once 3 s behind, the replica is skipped.
    let mut standby_conn = PgConnection::connect(&standby.url("parley")).await.unwrap();
    on_standby(&mut standby_conn, "SELECT pg_wal_replay_pause()").await;
    until(&mut standby_conn, "SELECT pg_get_wal_replay_pause_state() = 'paused'", "replay paused").await;
    let position = node.post(&conversation, "while paused").await;
    let stale = node.texts(&conversation, None).await;
    assert!(!stale.contains(&"while paused".to_owned()), "read on the paused replica: {stale:?}");
    let asked = Instant::now();
    let fresh = node.texts(&conversation, Some(&position)).await;
    assert!(fresh.contains(&"while paused".to_owned()), "answered by the primary: {fresh:?}");
    assert!(asked.elapsed() < Duration::from_secs(8), "within the allowed lag and a little");
    let lagging = node.until_replica("lagging", Duration::from_secs(10)).await;
    assert!(lagging["lag_seconds"].as_f64().unwrap() > 3.0, "{lagging}");
    assert!(lagging["lag"].as_i64().unwrap() >= 1, "the replica's copy misses the post: {lagging}");
    assert_eq!(node.metric("parley_replica_up").await, 0.0);
    let from_primary = node.metric(primary_reads).await;
    assert!(node.texts(&conversation, None).await.contains(&"while paused".to_owned()));
    assert!(node.metric(primary_reads).await > from_primary, "skipped for the primary");
    on_standby(&mut standby_conn, "SELECT pg_wal_replay_resume()").await;
    let caught_up = node.until_replica("up", Duration::from_secs(10)).await;
    assert_eq!(caught_up["lag"], 0, "{caught_up}");
    assert_eq!(node.metric("parley_replica_up").await, 1.0);

    // A recovery conflict: a read on the replica holds `conversations` and waits for
    // `conversation_members`, which a transaction on the primary locked; that transaction then
    // locks `conversations` too, and replay, needing what the read holds, cancels it. The
    // primary answers the read once the transaction ends.
    let conflicts_before = loop {
        let counted = sqlx::query_as::<_, (i64,)>(
            "SELECT confl_lock + confl_deadlock FROM pg_stat_database_conflicts WHERE datname = 'parley'",
        )
        .fetch_one(&mut standby_conn)
        .await;
        match counted {
            Ok((n,)) => break n,
            Err(e) if parley_api::replica::is_refused_by_standby(&e) => continue,
            Err(e) => panic!("{e}"),
        }
    };
    let fallbacks = node.metric("parley_replica_fallbacks_total").await;
    let mut locker = PgConnection::connect(&primary.url("parley")).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE conversation_members IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    // A lock alone is not flushed to the WAL the standby streams: a commit flushes it.
    primary.psql("SELECT pg_current_xact_id()").await;
    until(
        &mut standby_conn,
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE mode = 'AccessExclusiveLock' \
         AND relation = 'conversation_members'::regclass)",
        "the lock replayed on the standby",
    )
    .await;
    let read = {
        let (http, base, token, id) =
            (node.http.clone(), node.base.clone(), node.token.clone(), conversation.clone());
        tokio::spawn(async move {
            let res = http
                .get(format!("{base}/api/v1/conversations/{id}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        })
    };
    waits_on_a_lock(&mut standby_conn, "parley-replica", "the read waits on the replica").await;
    sqlx::query("LOCK TABLE conversations IN ACCESS EXCLUSIVE MODE").execute(&mut locker).await.unwrap();
    primary.psql("SELECT pg_current_xact_id()").await;
    let mut on_primary = PgConnection::connect(&primary.url("parley")).await.unwrap();
    waits_on_a_lock(&mut on_primary, "parley", "the read, cancelled on the replica, waits on the primary")
        .await;
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    let (status, body) = read.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["title"], "Replicated");
    // A backend reports its statistics when idle, within a second or so.
    until(
        &mut standby_conn,
        &format!(
            "SELECT confl_lock + confl_deadlock > {conflicts_before} FROM pg_stat_database_conflicts \
             WHERE datname = 'parley'"
        ),
        "the standby counted the cancelled read",
    )
    .await;
    assert!(node.metric("parley_replica_fallbacks_total").await > fallbacks);

    // The replica stops: reads sent there before the follower noticed are answered by the
    // primary, later ones go there; back up, it is used again.
    node.until_replica("up", Duration::from_secs(10)).await;
    drop(standby_conn);
    standby.down().await;
    for n in 0..10 {
        let position = node.post(&conversation, &format!("d{n}")).await;
        assert!(node.texts(&conversation, Some(&position)).await.contains(&format!("d{n}")));
    }
    let down = node.until_replica("down", Duration::from_secs(10)).await;
    assert_eq!(down["position"], Value::Null, "{down}");
    standby.up().await;
    node.until_replica("up", Duration::from_secs(20)).await;
    let before = node.metric(replica_reads).await;
    let position = node.post(&conversation, "back").await;
    assert!(node.texts(&conversation, Some(&position)).await.contains(&"back".to_owned()));
    assert!(node.metric(replica_reads).await > before, "read on the replica again");

    server.stop().await;
    standby.remove().await;
    primary.remove().await;
}
