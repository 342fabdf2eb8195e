//! The live feed over WebSocket: many clients each get every event once in order, a reconnecting
//! client gets exactly what it missed, a lagging one catches up from the store.

use std::collections::HashMap;
use std::sync::Arc;

use parley_tests::server::TestServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_post_forty_messages_each_and_an_account_subscriber_gets_each_once_in_order() {
    let s = Arc::new(TestServer::start().await);
    let owner = s.register("owner@example.com").await;
    let conversation = s.group(&owner, &[]).await;
    let mut cable = s.cable(Some(&owner.token)).await;
    cable.frame().await;
    assert_eq!(cable.subscribe("account", None, None).await["type"], json!("subscribed"));

    let clients: Vec<_> = (0..16)
        .map(|client| {
            let (s, token, conversation) = (s.clone(), owner.token.clone(), conversation.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in 0..40 {
                    let body = json!({"body": format!("{client}/{i}")});
                    let a =
                        s.post(&format!("/api/v1/conversations/{conversation}/messages"), &token, body).await;
                    statuses.push(a.status.as_u16());
                }
                statuses
            })
        })
        .collect();
    for c in clients {
        assert!(c.await.unwrap().iter().all(|s| *s == 201), "every post is accepted");
    }
    // The subscription started at the log head; the group's own start may still arrive first.
    let mut frames = Vec::new();
    while frames.len() < 640 {
        let f = cable.events(1).await.remove(0);
        if f["event"]["event_type"] == json!("MessagePosted") {
            frames.push(f);
        }
    }
    let mut seen = HashMap::new();
    let mut last_per_client: HashMap<String, i64> = HashMap::new();
    for f in &frames {
        let body = f["event"]["data"]["body"].as_str().unwrap().to_owned();
        assert!(seen.insert(body.clone(), ()).is_none(), "{body} delivered twice");
        let (client, i) = body.split_once('/').unwrap();
        let i: i64 = i.parse().unwrap();
        let prev = last_per_client.insert(client.to_owned(), i);
        assert!(prev.is_none_or(|p| p < i), "client {client} in order");
    }
    assert_eq!(seen.len(), 640);
    Arc::into_inner(s).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_reconnects_with_its_last_position_gets_exactly_what_it_missed_then_live() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let conversation = s.group(&owner, &[]).await;
    let path = format!("/api/v1/conversations/{conversation}/messages");
    let mut cable = s.cable(Some(&owner.token)).await;
    cable.frame().await;
    cable.subscribe("conversation", Some(&conversation), None).await;
    s.post(&path, &owner.token, json!({"body": "before"})).await;
    // Subscribed at the readable head, the group's own start may still arrive first.
    let last = loop {
        let f = cable.events(1).await.remove(0);
        if f["event"]["data"]["body"] == json!("before") {
            break f["position"].as_str().unwrap().to_owned();
        }
    };
    drop(cable);

    for i in 0..100 {
        assert_eq!(s.post(&path, &owner.token, json!({"body": format!("missed {i}")})).await.status, 201);
    }
    let mut cable = s.cable(Some(&owner.token)).await;
    cable.frame().await;
    assert_eq!(
        cable.subscribe("conversation", Some(&conversation), Some(&last)).await["type"],
        json!("subscribed")
    );
    let missed = cable.events(100).await;
    let bodies: Vec<&str> = missed.iter().map(|f| f["event"]["data"]["body"].as_str().unwrap()).collect();
    let expected: Vec<String> = (0..100).map(|i| format!("missed {i}")).collect();
    assert_eq!(bodies, expected);
    s.post(&path, &owner.token, json!({"body": "live"})).await;
    let live = cable.events(1).await;
    assert_eq!(live[0]["event"]["data"]["body"], json!("live"), "then live, with nothing repeated");

    // From the beginning of the log, a member sees the conversation's whole history.
    let mut again = s.cable(Some(&owner.token)).await;
    again.frame().await;
    again.subscribe("conversation", Some(&conversation), Some("0")).await;
    let all = again.events(2 + 102).await;
    assert_eq!(all[0]["event"]["event_type"], json!("ConversationStarted"));
    assert_eq!(all[103]["event"]["data"]["body"], json!("live"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_websocket_that_falls_behind_the_live_feed_catches_up_from_the_store_without_gap_or_duplicate() {
    // A feed that keeps only 4 events: any burst makes a connection lag behind it.
    let s = TestServer::start_with(|o| o.live_capacity = 4).await;
    let owner = s.register("owner@example.com").await;
    let conversation = s.group(&owner, &[]).await;
    let mut cable = s.cable(Some(&owner.token)).await;
    cable.frame().await;
    cable.subscribe("conversation", Some(&conversation), Some("0")).await;
    // Bursts of 100 events in one transaction reach the feed as one batch: far more than it keeps.
    let account: uuid::Uuid = owner.account_id.parse().unwrap();
    s.t.append_messages(account, conversation.parse().unwrap(), 200, 100).await;
    // The group's own two events, then the 200 messages, each once, in log order.
    let frames = cable.events(202).await;
    let metrics = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    let catch_ups: f64 = metrics
        .lines()
        .find(|l| l.starts_with("parley_ws_catch_ups_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(catch_ups >= 1.0, "the connection lagged and caught up from the store");
    let positions: Vec<&str> = frames.iter().map(|f| f["position"].as_str().unwrap()).collect();
    let cursors: Vec<parley_eventstore::LogCursor> = positions.iter().map(|p| p.parse().unwrap()).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "strictly increasing positions: no duplicate, in order");
    let bodies: std::collections::HashSet<&str> =
        frames.iter().filter_map(|f| f["event"]["data"]["body"].as_str()).collect();
    assert_eq!(bodies.len(), 200, "every message arrived");
    s.stop().await;
}
