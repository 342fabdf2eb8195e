//! `/dashboard` in a real headless Chromium: it signs in, follows the account channel, shows a
//! message posted over HTTP within a second, opens an event's correlation chain, resumes after a
//! dropped connection without a gap or a duplicate, and logs no JavaScript error. A bad token is
//! told so on the page. A screenshot is kept in `target/test-artifacts/`.

use parley_tests::browser::Browser;
use parley_tests::server::TestServer;
use serde_json::json;

fn artifact(name: &str) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/test-artifacts");
    std::fs::create_dir_all(dir).unwrap();
    format!("{dir}/{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_the_account_live_in_a_real_browser() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let member = s.invite_member(&owner, "member@example.com").await;
    let group = s.group(&owner, &[&member]).await;
    let mut browser = Browser::start(&s.base).await;

    browser.open(&format!("/dashboard?token={}", owner.token)).await;
    browser.run(json!({"op": "subscribed"})).await;
    let posted = s
        .post(&format!("/api/v1/conversations/{group}/messages"), &member.token, json!({"body": "live"}))
        .await;
    assert_eq!(posted.status, 201);
    let shown = browser.run(json!({"op": "event", "event_type": "MessagePosted", "within_ms": 1000})).await;
    assert!(shown["ms"].as_u64().unwrap() <= 1000, "{shown}");

    // An event's data and its correlation chain (the audit API's correlation_id filter).
    browser.run(json!({"op": "click", "event_type": "MessagePosted"})).await;
    let chain = browser.run(json!({"op": "chain"})).await;
    let links: Vec<String> = serde_json::from_value(chain["links"].clone()).unwrap();
    // One request: the post alone (and nothing of the account's earlier requests).
    assert_eq!(links.len(), 1, "{links:?}");
    assert!(links[0].starts_with("MessagePosted on Conversation/"), "{links:?}");
    let detail = browser.run(json!({"op": "text", "id": "detail-data"})).await;
    assert!(detail["text"].as_str().unwrap().contains("\"body\": \"live\""), "{detail}");
    // The operational panels filled in from the admin, analytics and metrics endpoints.
    let projections = browser.run(json!({"op": "text", "id": "projections"})).await;
    assert!(projections["text"].as_str().unwrap().contains("messages"), "{projections}");
    let today = browser.run(json!({"op": "text", "id": "today"})).await;
    assert!(today["text"].as_str().unwrap().contains("messages"), "{today}");

    // The connection drops; what is posted meanwhile arrives after the reconnect, once.
    browser.run(json!({"op": "eval", "js": "state.socket.close(); true"})).await;
    for body in ["while away", "and again"] {
        let a = s
            .post(&format!("/api/v1/conversations/{group}/messages"), &owner.token, json!({"body": body}))
            .await;
        assert_eq!(a.status, 201);
    }
    browser.run(json!({"op": "subscribed"})).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let rows = browser.run(json!({"op": "rows", "event_type": "MessagePosted"})).await;
        if rows["count"] == 3 {
            break;
        }
        assert!(rows["count"].as_u64().unwrap() < 3, "a duplicate after the reconnect: {rows}");
        assert!(std::time::Instant::now() < deadline, "the posts made while away never came: {rows}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    browser.run(json!({"op": "screenshot", "path": artifact("dashboard.png")})).await;
    let errors = browser.run(json!({"op": "errors"})).await;
    assert_eq!(errors["errors"], json!([]), "the page logged errors");

    // A bad token: the page says so.
    let mut stranger = Browser::start(&s.base).await;
    stranger.open("/dashboard").await;
    stranger.run(json!({"op": "login", "token": "not-a-token"})).await;
    let refused = stranger.run(json!({"op": "text", "id": "login-error"})).await;
    assert!(refused["text"].as_str().unwrap().contains("not valid"), "{refused}");
    s.stop().await;
}
