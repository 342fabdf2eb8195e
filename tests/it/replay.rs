//! Audit tooling: verification names tampered rows; past states; secrets never shown.

use std::process::ExitCode;

use clap::Parser;
use parley_api::cli::{run, Cli};
use parley_eventstore::{EventFilter, StreamKey};
use parley_replay::{events, state, verify, AsOf, ProblemKind};
use parley_tests::TestApp;
use serde_json::json;
use uuid::Uuid;

/// An account with a group of two and a few messages.
async fn some_history(t: &TestApp) -> Uuid {
    let (owner, _) = t.owner("owner@example.com").await;
    let group = t.app.commands.start_group(&owner, "General", &[]).await.unwrap();
    let id = group.aggregate.id.unwrap();
    for i in 0..5 {
        t.app.commands.post_message(&owner, id, &format!("message {i}")).await.unwrap();
    }
    id
}

/// Runs SQL against `events` with its append-only triggers disabled, as an attacker with
/// table-owner rights would.
async fn tamper(t: &TestApp, sql: &str) {
    let mut tx = t.app.store.pool().begin().await.unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER USER").execute(&mut *tx).await.unwrap();
    sqlx::query(sql).execute(&mut *tx).await.unwrap();
    sqlx::query("ALTER TABLE events ENABLE TRIGGER USER").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn verify_passes_on_an_untouched_log_and_names_the_row_whose_payload_was_updated() {
    let t = TestApp::new().await;
    let conversation = some_history(&t).await;
    let pool = t.app.store.pool();
    let clean = verify(pool, None, &[]).await.unwrap();
    assert!(clean.ok(), "{:?}", clean.problems);
    assert_eq!(clean.streams, 4, "account, user, primary space, conversation");
    assert_eq!(clean.events, 2 + 2 + 1 + 5);

    let (position,): (i64,) =
        sqlx::query_as("SELECT position FROM events WHERE stream_id = $1 AND version = 4")
            .bind(conversation.to_string())
            .fetch_one(pool)
            .await
            .unwrap();
    tamper(&t, &format!("UPDATE events SET payload = jsonb_set(payload, '{{body}}', '\"forged\"') WHERE position = {position}")).await;
    let report = verify(pool, None, &[]).await.unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let p = &report.problems[0];
    assert_eq!((p.kind, p.position, p.version), (ProblemKind::Altered, Some(position), 4));

    let cli = |args: &[&str]| {
        let mut argv = vec!["parley".to_owned(), "--database-url".to_owned(), t.db.url()];
        argv.extend(args.iter().map(|a| a.to_string()));
        Cli::try_parse_from(argv).unwrap()
    };
    let code = run(cli(&["replay", "verify"])).await.unwrap();
    assert_eq!(code, ExitCode::FAILURE, "the CLI exits 1 on a tampered log");
    t.finish().await;
}

#[tokio::test]
async fn verify_detects_a_deleted_event_and_with_kept_heads_a_truncated_tail() {
    let t = TestApp::new().await;
    let conversation = some_history(&t).await;
    let pool = t.app.store.pool();
    let heads = verify(pool, None, &[]).await.unwrap().heads;
    let id = conversation.to_string();

    tamper(&t, &format!("DELETE FROM events WHERE stream_id = '{id}' AND version = 7")).await;
    let tail_cut = verify(pool, None, &[]).await.unwrap();
    assert!(tail_cut.ok(), "without kept heads a cut tail looks like a shorter stream");
    let with_heads = verify(pool, None, &heads).await.unwrap();
    assert_eq!(with_heads.problems.len(), 1);
    assert_eq!((with_heads.problems[0].kind, with_heads.problems[0].version), (ProblemKind::Truncated, 7));

    tamper(&t, &format!("DELETE FROM events WHERE stream_id = '{id}' AND version = 3")).await;
    let report = verify(pool, None, &[]).await.unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!((report.problems[0].kind, report.problems[0].version), (ProblemKind::Missing, 4));
    t.finish().await;
}

#[tokio::test]
async fn state_at_version_one_shows_a_conversation_as_first_started() {
    let t = TestApp::new().await;
    let conversation = some_history(&t).await;
    let first =
        state(&t.app.store, "Conversation", &conversation.to_string(), AsOf::Version(1)).await.unwrap();
    assert_eq!(first.version, 1);
    assert_eq!(first.events.len(), 1);
    assert_eq!(first.events[0].event_type, "ConversationStarted");
    assert_eq!(first.state["kind"], json!("group"));
    assert_eq!(first.state["title"], json!("General"));
    assert_eq!(first.state["members"], json!({}));
    assert_eq!(first.state["messages_posted"], json!(0));

    let now = state(&t.app.store, "Conversation", &conversation.to_string(), AsOf::Latest).await.unwrap();
    assert_eq!((now.version, now.state["messages_posted"].clone()), (7, json!(5)));
    let at_time = now.events[2].recorded_at;
    let then =
        state(&t.app.store, "Conversation", &conversation.to_string(), AsOf::Time(at_time)).await.unwrap();
    assert!(then.version >= 3 && then.events.iter().all(|e| e.recorded_at <= at_time));
    t.finish().await;
}

#[tokio::test]
async fn secrets_are_redacted_in_events_and_states() {
    let t = TestApp::new().await;
    let (_, owner) = t.owner("owner@example.com").await;
    t.settle().await;
    let filter = EventFilter { stream_type: Some("User".into()), ..Default::default() };
    let mut seen = Vec::new();
    events(&t.app.store, &filter, None, |page| seen.extend_from_slice(page)).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].payload["password_hash"], json!("[redacted]"));
    let user = state(&t.app.store, "User", &owner.user_id.to_string(), AsOf::Latest).await.unwrap();
    assert_eq!(user.state["password_hash"], json!("[redacted]"));
    assert_eq!(user.events[0].payload["password_hash"], json!("[redacted]"));
    let raw =
        t.app.store.read_stream(&StreamKey::new("User", owner.user_id.to_string()), 0, None).await.unwrap();
    assert!(
        raw[0].payload["password_hash"].as_str().unwrap().starts_with("$argon2id$"),
        "the log keeps the hash"
    );
    t.finish().await;
}

#[tokio::test]
async fn event_queries_filter_by_every_field_and_page_in_log_order() {
    let t = TestApp::new().await;
    let conversation = some_history(&t).await;
    let (other, _) = t.owner("other@example.com").await;
    t.settle().await;
    let mut all = Vec::new();
    events(&t.app.store, &EventFilter::default(), None, |p| all.extend_from_slice(p)).await.unwrap();
    assert_eq!(all.len(), 10 + 3);
    assert!(all.windows(2).all(|w| w[0].cursor() < w[1].cursor()));
    let mine = EventFilter { account_id: Some(all[0].account_id), ..Default::default() };
    let mut n = 0;
    events(&t.app.store, &mine, None, |p| n += p.len()).await.unwrap();
    assert_eq!(n, 10);
    let posted = EventFilter {
        stream_id: Some(conversation.to_string()),
        event_type: Some("MessagePosted".into()),
        after: all[4].cursor(),
        ..Default::default()
    };
    let mut page = Vec::new();
    let count = events(&t.app.store, &posted, Some(2), |p| page.extend_from_slice(p)).await.unwrap();
    assert_eq!(count, 2);
    assert!(page.iter().all(|e| e.event_type == "MessagePosted" && e.cursor() > all[4].cursor()));
    let by_actor = EventFilter { actor_id: other.actor.id, ..Default::default() };
    let mut theirs = Vec::new();
    events(&t.app.store, &by_actor, None, |p| theirs.extend_from_slice(p)).await.unwrap();
    assert_eq!(theirs.len(), 3, "the other owner registered: account, user and primary space");
    let until = EventFilter { until: Some(all[0].recorded_at), ..Default::default() };
    let mut none = 0;
    events(&t.app.store, &until, None, |p| none += p.len()).await.unwrap();
    assert_eq!(none, 0, "until is exclusive");
    t.finish().await;
}
