//! Cursor pagination of a conversation's messages: both directions, each message once, in order,
//! while more arrive.

use futures::future::join_all;
use parley_tests::server::{TestServer, User};
use serde_json::json;

use crate::http_chat::messages_path;

/// Walks a conversation's messages one way (`before` or `after`) from `start`, 100 at a time;
/// returns the `(cursor, body)` of each message seen, in walk order.
async fn walk(
    s: &TestServer,
    user: &User,
    conversation: &str,
    at: &str,
    direction: &str,
    start: Option<&str>,
) -> Vec<(i64, String)> {
    let mut seen = Vec::new();
    let mut cursor = start.map(str::to_owned);
    loop {
        let q = match &cursor {
            Some(c) => format!("{}?limit=100&{direction}={c}", messages_path(conversation)),
            None => format!("{}?limit=100", messages_path(conversation)),
        };
        let page = s.get_at(&q, &user.token, at).await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        let mut rows: Vec<(i64, String)> = page
            .data()
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["cursor"].as_str().unwrap().parse().unwrap(), m["body"].as_str().unwrap().to_owned()))
            .collect();
        if direction == "after" {
            rows.reverse();
        }
        seen.extend(rows);
        match page.body["meta"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return seen,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_messages_page_both_ways_each_once_in_order_while_more_arrive() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let group = s.group(&owner, &[]).await;
    let path = messages_path(&group);
    let mut at = String::new();
    for chunk in (0..1000).collect::<Vec<usize>>().chunks(25) {
        let answers =
            join_all(chunk.iter().map(|i| s.post(&path, &owner.token, json!({"body": format!("m{i}")}))))
                .await;
        assert!(answers.iter().all(|a| a.status == 201));
        at = answers
            .iter()
            .map(|a| a.position())
            .max_by_key(|p| {
                p.split_once('_').map(|(x, y)| (x.parse::<u64>().unwrap(), y.parse::<u64>().unwrap()))
            })
            .unwrap();
    }
    let originals = |seen: &[(i64, String)]| -> Vec<String> {
        seen.iter().filter(|(_, b)| !b.starts_with("late")).map(|(_, b)| b.clone()).collect()
    };
    for (direction, start) in [("before", None), ("after", Some("0"))] {
        // Newcomers are posted while the walk goes on.
        let poster = async {
            for i in 0..60 {
                s.post(&path, &owner.token, json!({"body": format!("late-{direction}-{i}")})).await;
            }
        };
        let (seen, ()) = tokio::join!(walk(&s, &owner, &group, &at, direction, start), poster);
        let cursors: Vec<i64> = seen.iter().map(|(c, _)| *c).collect();
        let ordered = if direction == "before" {
            cursors.windows(2).all(|w| w[0] > w[1])
        } else {
            cursors.windows(2).all(|w| w[0] < w[1])
        };
        assert!(ordered, "{direction}: strictly in order, so no message twice");
        let mut bodies = originals(&seen);
        assert_eq!(bodies.len(), 1000, "{direction}: each of the thousand once");
        bodies.sort();
        bodies.dedup();
        assert_eq!(bodies.len(), 1000);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_of_messages_walk_both_ways_each_message_once_in_order() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let conversation = s.group(&owner, &[]).await;
    let path = format!("/api/v1/conversations/{conversation}/messages");
    let mut last = String::new();
    for i in 0..25 {
        last = s.post(&path, &owner.token, json!({"body": format!("m{i:02}")})).await.position();
    }
    let bodies = |a: &parley_tests::server::Answer| -> Vec<String> {
        a.data().as_array().unwrap().iter().map(|m| m["body"].as_str().unwrap().to_owned()).collect()
    };
    // Older: newest first, page by page, until next_cursor is null.
    let mut older = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("{path}?limit=10&before={c}"),
            None => format!("{path}?limit=10"),
        };
        let page = s.get_at(&q, &owner.token, &last).await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        let b = bodies(&page);
        assert!(b.windows(2).all(|w| w[0] > w[1]), "newest first within a page: {b:?}");
        older.extend(b);
        match page.body["meta"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).rev().map(|i| format!("m{i:02}")).collect();
    assert_eq!(older, expected);
    // Newer: from the beginning, pages of 10, each newest first, walking forward.
    let mut newer = Vec::new();
    let mut cursor = "0".to_owned();
    loop {
        let page = s.get_at(&format!("{path}?limit=10&after={cursor}"), &owner.token, &last).await;
        let mut b = bodies(&page);
        b.reverse();
        newer.extend(b);
        match page.body["meta"]["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("m{i:02}")).collect();
    assert_eq!(newer, expected);
    s.stop().await;
}
