//! Webhooks out and in, checked by an independent Standard Webhooks implementation (the
//! specification's Rust library), against a real receiver on loopback.

use std::time::{Duration, Instant};

use parley_tests::receiver::{Receiver, Reply};
use parley_tests::server::{TestServer, User};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

/// Subscribes `url` to `types`; returns the subscription's answer data (with its secret).
async fn subscribe(s: &TestServer, owner: &User, url: &str, types: &[&str]) -> Value {
    let a = s
        .post("/api/v1/webhooks/subscriptions", &owner.token, json!({"url": url, "event_types": types}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    a.data().clone()
}

/// Posts a message; returns its event id (the `webhook-id` its delivery must carry).
async fn post(s: &TestServer, owner: &User, group: &str, body: &str) -> String {
    let a =
        s.post(&format!("/api/v1/conversations/{group}/messages"), &owner.token, json!({"body": body})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    let id: Uuid = a.data()["id"].as_str().unwrap().parse().unwrap();
    let (event,): (Uuid,) = sqlx::query_as(
        "SELECT event_id FROM events WHERE event_type = 'MessagePosted' AND payload->>'message_id' = $1",
    )
    .bind(id.to_string())
    .fetch_one(s.t.app.store.pool())
    .await
    .unwrap();
    event.to_string()
}

/// Waits until `check` holds for the answer of GET `path` (a condition, not a time).
async fn until(s: &TestServer, path: &str, token: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = s.get(path, token).await;
        if check(&a.body) {
            return a.body;
        }
        assert!(Instant::now() < deadline, "{path} never became as expected: {:?}", a.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_delivered_once_signed_to_the_standard_and_the_log_holds_no_secret() {
    let s = TestServer::start().await;
    let mut receiver = Receiver::start().await;
    let owner = s.register("owner@example.com").await;
    let member = s.invite_member(&owner, "member@example.com").await;
    let group = s.group(&owner, &[&member]).await;
    let subscription = subscribe(&s, &owner, &receiver.url("hooks/a"), &["MessagePosted"]).await;
    let secret = subscription["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{subscription}");
    // Right after the subscription: the fan-out learns of it from the log, in order.
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(post(&s, &owner, &group, &format!("message {i}")).await);
    }
    // Not subscribed to: not delivered.
    let edited = s
        .call(
            Method::PATCH,
            &format!("/api/v1/conversations/{group}"),
            Some(&owner.token),
            Some(json!({"title": "Renamed"})),
            &[],
        )
        .await;
    assert_eq!(edited.status, StatusCode::OK, "{:?}", edited.body);
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(receiver.next(20).await);
    }
    let mut ids: Vec<String> = got.iter().map(|d| d.header("webhook-id").to_owned()).collect();
    ids.sort();
    sent.sort();
    assert_eq!(ids, sent, "one delivery per event, webhook-id = the event id");
    for d in &got {
        assert!(d.verifies_with(&secret), "the Standard Webhooks library verifies it: {:?}", d.headers);
        assert!(!d.verifies_with("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "and not with another secret");
        assert_eq!(d.header("content-type"), "application/json");
        let body = d.json();
        assert_eq!(body["type"], "MessagePosted");
        assert!(body["data"]["body"].as_str().unwrap().starts_with("message "), "{body}");
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'), "{body}");
    }
    // Every attempt recorded; nothing more arrives once the fan-out has passed the last event.
    let attempts =
        format!("/api/v1/webhooks/subscriptions/{}/attempts", subscription["id"].as_str().unwrap());
    let listed =
        until(&s, &attempts, &owner.token, |b| b["data"].as_array().is_some_and(|a| a.len() == 5)).await;
    assert!(listed["data"].as_array().unwrap().iter().all(|a| a["status_code"] == 200 && a["attempt"] == 1));
    let head = s.t.app.store.head().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (at,): (i64,) =
            sqlx::query_as("SELECT cursor_position FROM consumer_checkpoints WHERE name = 'webhook_fanout'")
                .fetch_one(s.t.app.store.pool())
                .await
                .unwrap();
        let (pending,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM jobs WHERE kind = 'webhooks.deliver' AND state NOT IN ('completed')",
        )
        .fetch_one(s.t.app.store.pool())
        .await
        .unwrap();
        if at >= head.position && pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the fan-out reaches the head and its jobs finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(receiver.drain().is_empty(), "one delivery per event and subscription");
    // The log records a fingerprint, never the secret or its key.
    let key = secret.trim_start_matches("whsec_");
    let (leaks,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM events WHERE payload::text LIKE '%' || $1 || '%'")
            .bind(key)
            .fetch_one(s.t.app.store.pool())
            .await
            .unwrap();
    assert_eq!(leaks, 0);
    let shown = s
        .get(
            &format!("/api/v1/webhooks/subscriptions/{}", subscription["id"].as_str().unwrap()),
            &owner.token,
        )
        .await;
    assert!(
        shown.data().get("secret").is_none()
            && shown.data()["secret_fingerprint"].as_str().unwrap().starts_with("sha256:")
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rotation_both_secrets_sign_each_verifying_alone() {
    let s = TestServer::start().await;
    let mut receiver = Receiver::start().await;
    let owner = s.register("owner@example.com").await;
    let group = s.group(&owner, &[]).await;
    let subscription = subscribe(&s, &owner, &receiver.url("rotating"), &["MessagePosted"]).await;
    let id = subscription["id"].as_str().unwrap();
    let old = subscription["secret"].as_str().unwrap().to_owned();
    let rotated =
        s.post(&format!("/api/v1/webhooks/subscriptions/{id}/rotate"), &owner.token, json!({})).await;
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.body);
    let new = rotated.data()["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    post(&s, &owner, &group, "after the rotation").await;
    let d = receiver.next(20).await;
    assert_eq!(d.header("webhook-signature").split(' ').count(), 2, "{:?}", d.headers);
    assert!(d.verifies_with(&old) && d.verifies_with(&new), "each secret verifies the delivery alone");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_the_subscription_and_a_redirect_fails_without_being_followed() {
    let s = TestServer::start().await;
    let mut receiver = Receiver::start().await;
    receiver.answer("gone", Reply::Status(410, Vec::new()));
    receiver.answer("moved", Reply::Status(302, vec![("location", receiver.url("elsewhere"))]));
    receiver.answer("busy", Reply::Status(503, vec![("retry-after", "3600".into())]));
    let owner = s.register("owner@example.com").await;
    let group = s.group(&owner, &[]).await;
    let gone = subscribe(&s, &owner, &receiver.url("gone"), &["MessagePosted"]).await;
    let moved = subscribe(&s, &owner, &receiver.url("moved"), &["MessagePosted"]).await;
    let busy = subscribe(&s, &owner, &receiver.url("busy"), &["MessagePosted"]).await;
    let event = post(&s, &owner, &group, "hello").await;
    let mut paths: Vec<String> = Vec::new();
    for _ in 0..3 {
        paths.push(receiver.next(20).await.path);
    }
    paths.sort();
    assert_eq!(paths, ["busy", "gone", "moved"]);
    let gone_path = format!("/api/v1/webhooks/subscriptions/{}", gone["id"].as_str().unwrap());
    let disabled = until(&s, &gone_path, &owner.token, |b| b["data"]["enabled"] == false).await;
    assert!(disabled["data"]["disabled_reason"].as_str().unwrap().contains("410"), "{disabled}");
    let moved_attempts = format!("/api/v1/webhooks/subscriptions/{}/attempts", moved["id"].as_str().unwrap());
    let listed =
        until(&s, &moved_attempts, &owner.token, |b| b["data"].as_array().is_some_and(|a| !a.is_empty()))
            .await;
    let attempt = &listed["data"][0];
    assert_eq!(attempt["status_code"], 302, "{listed}");
    assert_eq!(attempt["event_id"], event.as_str());
    assert!(attempt["error"].as_str().unwrap().contains("redirect"), "{attempt}");
    // The 410 completed its job; the 302 left its job to retry in 5 s (±20%); the 503 in the
    // hour its Retry-After asked for.
    let busy_attempts = format!("/api/v1/webhooks/subscriptions/{}/attempts", busy["id"].as_str().unwrap());
    until(&s, &busy_attempts, &owner.token, |b| b["data"].as_array().is_some_and(|a| !a.is_empty())).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let retries: Vec<(String, String, f64)> = loop {
        let rows: Vec<(String, String, f64)> = sqlx::query_as(
            "SELECT args->>'subscription_id', state, extract(epoch FROM run_at - attempted_at)::float8 \
             FROM jobs WHERE kind = 'webhooks.deliver'",
        )
        .fetch_all(s.t.app.store.pool())
        .await
        .unwrap();
        if rows.iter().all(|(_, state, _)| state != "running") {
            break rows;
        }
        assert!(Instant::now() < deadline, "the deliveries finish their first attempt: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let of =
        |sub: &Value| retries.iter().find(|(id, _, _)| id == sub["id"].as_str().unwrap()).unwrap().clone();
    assert_eq!(of(&gone).1, "completed");
    let (_, state, wait) = of(&moved);
    assert!(state == "retryable" && (3.9..6.1).contains(&wait), "{state} in {wait} s");
    let (_, state, wait) = of(&busy);
    assert!(state == "retryable" && (3590.0..3610.0).contains(&wait), "{state} in {wait} s");
    assert!(receiver.drain().iter().all(|d| d.path != "elsewhere"), "the redirect is not followed");
    s.stop().await;
}

#[tokio::test]
async fn subscriptions_to_private_addresses_or_bad_types_are_refused_and_nothing_is_written() {
    let s = TestServer::start_with(|c| c.webhooks_allow_private = false).await;
    let owner = s.register("owner@example.com").await;
    let before = s.events().await;
    for url in [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:8080/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://100.64.1.1/hook",
        "ftp://example.com/hook",
        "not a url",
    ] {
        let a = s
            .post(
                "/api/v1/webhooks/subscriptions",
                &owner.token,
                json!({"url": url, "event_types": ["MessagePosted"]}),
            )
            .await;
        a.assert_error(422, "validation_failed");
        assert!(
            a.body["error"]["details"].get("url").is_some() || a.body["details"].get("url").is_some(),
            "{url}: {:?}",
            a.body
        );
    }
    for types in [json!([]), json!(["MessageSent"])] {
        let a = s
            .post(
                "/api/v1/webhooks/subscriptions",
                &owner.token,
                json!({"url": "https://example.com/", "event_types": types}),
            )
            .await;
        a.assert_error(422, "validation_failed");
    }
    assert_eq!(s.events().await, before, "nothing written");
    s.stop().await;
}

/// Signs `body` as an integration would, with the specification's library.
fn signed(secret: &str, id: &str, timestamp: i64, body: &str) -> Vec<(&'static str, String)> {
    let signature =
        standardwebhooks::Webhook::new(secret).unwrap().sign(id, timestamp, body.as_bytes()).unwrap();
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ]
}

async fn send_signed(
    s: &TestServer,
    hook: &str,
    headers: &[(&'static str, String)],
    body: &str,
) -> StatusCode {
    let mut req = reqwest::Client::new()
        .post(format!("{}/api/v1/webhooks/incoming/{hook}", s.base))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_hook_posts_each_verified_message_once_and_refuses_bad_signatures() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let group = s.group(&owner, &[]).await;
    let created = s
        .post("/api/v1/webhooks/incoming", &owner.token, json!({"conversation_id": group, "name": "CI"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let hook = created.data()["id"].as_str().unwrap().to_owned();
    let secret = created.data()["secret"].as_str().unwrap().to_owned();
    let now = chrono::Utc::now().timestamp();
    let body = r#"{"text": "build passed"}"#;
    let before = s.events().await;
    // Refused: a wrong signature, a stale timestamp, no signature; an unknown hook.
    let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert_eq!(send_signed(&s, &hook, &signed(other, "msg_1", now, body), body).await, 401);
    assert_eq!(send_signed(&s, &hook, &signed(&secret, "msg_1", now - 600, body), body).await, 401);
    assert_eq!(send_signed(&s, &hook, &[], body).await, 401);
    let mut tampered = signed(&secret, "msg_1", now, body);
    tampered[2].1 = tampered[2].1.replace("v1,", "v2,");
    assert_eq!(send_signed(&s, &hook, &tampered, body).await, 401);
    assert_eq!(
        send_signed(&s, &Uuid::now_v7().to_string(), &signed(&secret, "msg_1", now, body), body).await,
        404
    );
    // Accepted twice with one id: posted once.
    let ok = signed(&secret, "msg_1", now, body);
    assert_eq!(send_signed(&s, &hook, &ok, body).await, 202);
    assert_eq!(send_signed(&s, &hook, &ok, body).await, 202);
    // Signed but unprocessable: accepted, posts nothing.
    let junk = "this is not json";
    assert_eq!(send_signed(&s, &hook, &signed(&secret, "msg_2", now, junk), junk).await, 202);
    let no_text = r#"{"title": "no text"}"#;
    assert_eq!(send_signed(&s, &hook, &signed(&secret, "msg_3", now, no_text), no_text).await, 202);
    // Every job done: one message, by the hook, as a webhook actor.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (left,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM jobs WHERE kind = 'webhooks.incoming' AND state <> 'completed'",
        )
        .fetch_one(s.t.app.store.pool())
        .await
        .unwrap();
        let (all,): (i64,) = sqlx::query_as("SELECT count(*) FROM jobs WHERE kind = 'webhooks.incoming'")
            .fetch_one(s.t.app.store.pool())
            .await
            .unwrap();
        if left == 0 && all == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the incoming jobs finish ({left} of {all} left)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.events().await, before + 1, "one message posted");
    let (author, actor): (String, Value) = sqlx::query_as(
        "SELECT payload->>'author_id', metadata FROM events WHERE event_type = 'MessagePosted' AND payload->>'body' = 'build passed'",
    )
    .fetch_one(s.t.app.store.pool())
    .await
    .unwrap();
    assert_eq!(author, hook);
    assert_eq!(actor["actor_type"], "webhook");
    assert_eq!(actor["actor_id"], hook.as_str());
    // Another account's owner cannot see or delete the hook.
    let stranger = s.register("stranger@example.com").await;
    let a = s
        .call(Method::DELETE, &format!("/api/v1/webhooks/incoming/{hook}"), Some(&stranger.token), None, &[])
        .await;
    a.assert_error(404, "not_found");
    s.stop().await;
}
