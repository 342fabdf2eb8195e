//! `/api/v1/admin/projections`: the read models' positions and lag, and a rebuild as a job while
//! posting goes on, after which every answer is what it was.

use std::time::{Duration, Instant};

use parley_tests::server::TestServer;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_through_the_admin_endpoint_while_posting_goes_on_changes_no_answer() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let member = s.invite_member(&owner, "member@example.com").await;
    let listed = s.get("/api/v1/admin/projections", &owner.token).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    let names: Vec<&str> =
        listed.data().as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for name in ["users", "messages", "analytics"] {
        assert!(names.contains(&name), "{names:?}");
    }
    let first = &listed.data()[0];
    assert!(
        first["lag"].is_i64() && first["lag_seconds"].is_f64() && first["position"].is_string(),
        "{first}"
    );
    // Refusals, nothing written.
    let before = s.events().await;
    s.get("/api/v1/admin/projections", &member.token).await.assert_error(403, "forbidden");
    s.call(Method::POST, "/api/v1/admin/projections/messages/rebuild", Some(&member.token), None, &[])
        .await
        .assert_error(403, "forbidden");
    s.call(Method::POST, "/api/v1/admin/projections/nothing/rebuild", Some(&owner.token), None, &[])
        .await
        .assert_error(404, "not_found");
    assert_eq!(s.events().await, before);

    let quiet = s.group(&owner, &[&member]).await;
    let busy = s.group(&owner, &[&member]).await;
    let mut last = String::new();
    for i in 0..150 {
        let posted = s
            .post(
                &format!("/api/v1/conversations/{quiet}/messages"),
                &owner.token,
                json!({"body": format!("m{i}")}),
            )
            .await;
        assert_eq!(posted.status, 201);
        last = posted.position();
    }
    let page = format!("/api/v1/conversations/{quiet}/messages?limit=100");
    let answer_before = s.get_at(&page, &member.token, &last).await.body;

    // Posting goes on in another conversation while the messages read model is rebuilt.
    let poster = {
        let (http, base, token) = (s.http.clone(), s.base.clone(), owner.token.clone());
        tokio::spawn(async move {
            let mut last = String::new();
            for i in 0..100 {
                let r = http
                    .post(format!("{base}/api/v1/conversations/{busy}/messages"))
                    .bearer_auth(&token)
                    .json(&json!({"body": format!("during {i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                last = r.headers()["x-position"].to_str().unwrap().to_owned();
            }
            (busy, last)
        })
    };
    let accepted = s
        .call(Method::POST, "/api/v1/admin/projections/messages/rebuild", Some(&owner.token), None, &[])
        .await;
    assert_eq!(accepted.status, 202, "{:?}", accepted.body);
    assert_eq!(accepted.data()["name"], "messages");
    // The list shows the rebuild's progress until generation 2 serves alone.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = s.get("/api/v1/admin/projections", &owner.token).await;
        let messages: Vec<Value> =
            listed.data().as_array().unwrap().iter().filter(|p| p["name"] == "messages").cloned().collect();
        if messages.len() == 1 && messages[0]["generation"] == 2 && messages[0]["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "the rebuild did not take over: {messages:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (busy, busy_last) = poster.await.unwrap();
    assert_eq!(
        s.get_at(&page, &member.token, &last).await.body,
        answer_before,
        "the same answer after the rebuild"
    );
    let during = s
        .get_at(&format!("/api/v1/conversations/{busy}/messages?limit=100"), &member.token, &busy_last)
        .await;
    assert_eq!(during.data().as_array().unwrap().len(), 100, "every post made during the rebuild is there");
    s.stop().await;
}

/// A rolling upgrade: a newer version writes an event type this build does not know. Every
/// projection skips it (counted in `/metrics`, logged once) and moves past it: the next message
/// is read, and no projection is failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_type_this_version_does_not_know_are_skipped_by_every_projection() {
    use parley_eventstore::{Metadata, NewEvent, StreamAppend, StreamKey};
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let group = s.group(&owner, &[]).await;
    let account_id: uuid::Uuid = owner.account_id.parse().unwrap();
    let future = StreamAppend {
        account_id,
        stream: StreamKey::new("Widget", uuid::Uuid::now_v7().to_string()),
        expected_version: 0,
        events: vec![NewEvent::new("WidgetInvented", 1, serde_json::json!({"by": "a newer version"}))],
        metadata: Metadata::system(),
    };
    s.t.app.store.append(&future).await.unwrap();
    let posted = s
        .post(
            &format!("/api/v1/conversations/{group}/messages"),
            &owner.token,
            serde_json::json!({"body": "after"}),
        )
        .await;
    assert_eq!(posted.status, 201, "{:?}", posted.body);
    let read =
        s.get_at(&format!("/api/v1/conversations/{group}/messages"), &owner.token, &posted.position()).await;
    assert_eq!(read.data()[0]["body"], "after", "the projections moved past the unknown event");
    let listed = s.get_at("/api/v1/admin/projections", &owner.token, &posted.position()).await;
    for p in listed.data().as_array().unwrap() {
        assert_eq!(p["status"], "running", "{p}");
        assert!(p["last_error"].is_null(), "{p}");
    }
    let metrics = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("parley_unknown_events_total") && l.contains("WidgetInvented")),
        "counted in /metrics"
    );
    s.stop().await;
}
