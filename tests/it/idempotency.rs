//! Idempotency records: the same command with the same key appends once.

use parley_aggregates::conversation::{Conversation, ConversationCommand};
use parley_aggregates::values::MessageBody;
use parley_commands::{CommandContext, DispatchError, Executed, Idempotency, Idempotent};
use parley_eventstore::idempotency::{request_hash, IdempotencyCheck, IdempotencyKey, StoredResponse};
use parley_tests::TestApp;
use serde_json::json;
use uuid::Uuid;

fn key(ctx: &CommandContext, key: &str, body: &str) -> IdempotencyKey {
    IdempotencyKey {
        account_id: ctx.account_id,
        scope: format!("{}:POST:/messages", ctx.actor.id.unwrap()),
        key: key.into(),
        request_hash: request_hash(&json!({ "body": body })),
    }
}

fn post(ctx: &CommandContext, body: &str) -> ConversationCommand {
    ConversationCommand::PostMessage {
        message_id: Uuid::now_v7(),
        author_id: ctx.actor.id.unwrap(),
        body: MessageBody::parse(body).unwrap(),
        mentions: vec![],
    }
}

fn render(done: &Executed<Conversation>) -> StoredResponse {
    StoredResponse { status: 201, body: json!({ "version": done.version }), position: done.cursor }
}

fn render_error(e: &DispatchError) -> Option<StoredResponse> {
    matches!(e, DispatchError::Domain(_)).then(|| StoredResponse {
        status: 404,
        body: json!({"error": e.to_string()}),
        position: None,
    })
}

fn idem(key: &IdempotencyKey) -> Idempotency<'_, Executed<Conversation>> {
    Idempotency { key, render: &render, render_error: &render_error }
}

async fn events(t: &TestApp) -> i64 {
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM events").fetch_one(t.app.store.pool()).await.unwrap();
    n
}

#[tokio::test]
async fn the_same_command_with_the_same_key_appends_once_and_returns_the_stored_result() {
    let t = TestApp::new().await;
    let (owner, _) = t.owner("owner@example.com").await;
    let group = t.app.commands.start_group(&owner, "General", &[]).await.unwrap();
    let id = group.aggregate.id.unwrap().to_string();
    let dispatcher = t.app.commands.dispatcher();
    let k = key(&owner, "k-1", "hello");

    let first = dispatcher
        .execute_with::<Conversation>(&owner, &id, post(&owner, "hello"), Some(&idem(&k)))
        .await
        .unwrap();
    let Idempotent::Fresh(done) = first else { panic!("the first request runs") };
    let stored = render(&done);
    let after_first = events(&t).await;

    let again = dispatcher
        .execute_with::<Conversation>(&owner, &id, post(&owner, "hello"), Some(&idem(&k)))
        .await
        .unwrap();
    let Idempotent::Replayed(replayed) = again else { panic!("the retry is replayed") };
    assert_eq!(replayed, stored, "the stored response comes back, position included");
    assert_eq!(events(&t).await, after_first, "nothing more is appended");

    let other_body = key(&owner, "k-1", "something else");
    let refused = dispatcher
        .execute_with::<Conversation>(&owner, &id, post(&owner, "something else"), Some(&idem(&other_body)))
        .await;
    assert!(matches!(refused, Err(DispatchError::IdempotencyKeyReused)), "{refused:?}");
    assert_eq!(events(&t).await, after_first);

    let new_key = key(&owner, "k-2", "hello");
    let fresh = dispatcher
        .execute_with::<Conversation>(&owner, &id, post(&owner, "hello"), Some(&idem(&new_key)))
        .await
        .unwrap();
    assert!(matches!(fresh, Idempotent::Fresh(_)), "another key is another request");
    assert_eq!(events(&t).await, after_first + 1);
    t.finish().await;
}

#[tokio::test]
async fn a_duplicate_while_the_first_is_running_is_refused() {
    let t = TestApp::new().await;
    let (owner, _) = t.owner("owner@example.com").await;
    let group = t.app.commands.start_group(&owner, "General", &[]).await.unwrap();
    let id = group.aggregate.id.unwrap().to_string();
    let dispatcher = t.app.commands.dispatcher();
    let k = key(&owner, "slow", "hello");

    let mut first = dispatcher.begin(&owner).await.unwrap();
    assert_eq!(first.check_idempotency(&k).await.unwrap(), IdempotencyCheck::New);
    let second =
        dispatcher.execute_with::<Conversation>(&owner, &id, post(&owner, "hello"), Some(&idem(&k))).await;
    assert!(matches!(second, Err(DispatchError::IdempotencyInProgress)), "{second:?}");
    drop(first);
    t.finish().await;
}

#[tokio::test]
async fn a_refused_request_is_stored_and_replayed_with_its_refusal() {
    let t = TestApp::new().await;
    let (owner, _) = t.owner("owner@example.com").await;
    let (stranger, _) = t.owner("stranger@example.com").await;
    let group = t.app.commands.start_group(&owner, "General", &[]).await.unwrap();
    let id = group.aggregate.id.unwrap().to_string();
    let dispatcher = t.app.commands.dispatcher();
    // A stranger's post is refused by the aggregate (not a member): a client error, stored.
    let k = key(&stranger, "k-refused", "hello");
    let refused =
        dispatcher.execute_with::<Conversation>(&owner, &id, post(&stranger, "hello"), Some(&idem(&k))).await;
    assert!(matches!(refused, Err(DispatchError::Domain(_))), "{refused:?}");
    let again = dispatcher
        .execute_with::<Conversation>(&owner, &id, post(&stranger, "hello"), Some(&idem(&k)))
        .await
        .unwrap();
    let Idempotent::Replayed(stored) = again else { panic!("the refusal is replayed") };
    assert_eq!(stored.status, 404);
    t.finish().await;
}
