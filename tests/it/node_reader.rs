//! One reader of the log per node: the read models' runners, the process managers and the live
//! feed of a serving node follow the node's window of the log instead of each querying the log
//! after every commit.

use std::time::{Duration, Instant};

use parley_tests::server::TestServer;
use serde_json::json;

/// Waits until every read model and process manager has moved past the last event of the log.
async fn all_at_head(s: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (behind,): (i64,) = sqlx::query_as(
            "WITH head AS (SELECT transaction_id, position FROM events \
                           ORDER BY transaction_id DESC, position DESC LIMIT 1), \
                  cursors AS (SELECT cursor_tx, cursor_position FROM projection_generations WHERE state = 'live' \
                              UNION ALL SELECT cursor_tx, cursor_position FROM consumer_checkpoints) \
             SELECT count(*) FROM cursors, head WHERE (cursor_tx, cursor_position) < (head.transaction_id, head.position)",
        )
        .fetch_one(s.t.app.store.pool())
        .await
        .unwrap();
        if behind == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{behind} followers never reached the head of the log");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_followers_of_a_node_read_the_log_through_its_one_reader() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let member = s.invite_member(&owner, "member@example.com").await;
    let conversation = s.group(&owner, &[&member]).await;
    let mut cable = s.cable(Some(&member.token)).await;
    cable.subscribe("conversation", Some(&conversation), None).await;
    all_at_head(&s).await;

    // Given every follower at the head of the log,
    let (window_before, log_before) = s.t.app.store.follower_reads();
    // when messages, reactions and reads are written,
    let mut last = String::new();
    for i in 0..20 {
        let posted = s
            .post(
                &format!("/api/v1/conversations/{conversation}/messages"),
                &owner.token,
                json!({"body": format!("m{i}")}),
            )
            .await;
        assert_eq!(posted.status, 201, "{:?}", posted.body);
        let id = posted.data()["id"].as_str().unwrap().to_owned();
        let reacted =
            s.post("/api/v1/reactions", &member.token, json!({"message_id": id, "emoji": "👍"})).await;
        assert!(reacted.status.is_success(), "{:?}", reacted.body);
        last = reacted.position();
    }
    let events = cable.events(40).await;
    all_at_head(&s).await;
    let seen = s.get_at(&format!("/api/v1/conversations/{conversation}/messages"), &owner.token, &last).await;
    assert_eq!(seen.status, 200);

    // then the read models, process managers and live feed followed them through the node's
    // reader: none of them queried the log on its own.
    let (window_after, log_after) = s.t.app.store.follower_reads();
    assert_eq!(events.len(), 40, "the live feed delivered every message and reaction");
    assert_eq!(log_after - log_before, 0, "no follower at the head read the log itself");
    assert!(
        window_after - window_before >= 20,
        "followers read from the window ({window_before} → {window_after})"
    );
    s.stop().await;
}
