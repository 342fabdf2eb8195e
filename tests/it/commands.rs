//! The write side end to end on a real log: registration, claims, invitations, permissions,
//! tenancy, snapshots, and the read models they feed.

use std::sync::Arc;
use std::time::Duration;

use parley_aggregates::conversation::{Conversation, ConversationCommand, ConversationError, MemberRole};
use parley_aggregates::invitation::InvitationError;
use parley_aggregates::values::Name;
use parley_aggregates::DomainError;
use parley_commands::services::Registration;
use parley_commands::{DispatchError, Dispatcher};
use parley_eventstore::StreamKey;
use parley_projections::{wait_for, Runner};
use parley_tests::{user_context, TestApp};
use uuid::Uuid;

fn registration(email: &str, token: Option<&str>) -> Registration {
    Registration {
        name: "Someone".into(),
        email: email.into(),
        password: "correct horse battery".into(),
        invitation_token: token.map(str::to_owned),
        ..Default::default()
    }
}

#[tokio::test]
async fn one_email_registers_once_across_the_system_even_concurrently() {
    let t = Arc::new(TestApp::new().await);
    let attempts: Vec<_> = (0..10)
        .map(|i| {
            let t = t.clone();
            let email = if i % 2 == 0 { "Same@Example.com" } else { "same@example.com" };
            tokio::spawn(async move { t.app.commands.register(registration(email, None)).await })
        })
        .collect();
    let mut ok = 0;
    for a in attempts {
        match a.await.unwrap() {
            Ok(_) => ok += 1,
            Err(DispatchError::Claimed { kind: "user_email", .. }) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(ok, 1);
    let (accounts,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM events WHERE event_type = 'AccountOpened'")
            .fetch_one(t.app.store.pool())
            .await
            .unwrap();
    assert_eq!(accounts, 1, "a refused registration leaves nothing behind");
    Arc::into_inner(t).unwrap().finish().await;
}

#[tokio::test]
async fn bad_registrations_name_the_field_and_write_nothing() {
    let t = TestApp::new().await;
    for (r, field) in [
        (Registration { password: "short".into(), ..registration("a@example.com", None) }, "password"),
        (registration("not-an-email", None), "email"),
        (Registration { name: "   ".into(), ..registration("b@example.com", None) }, "name"),
        (registration("c@example.com", Some("no-such-token")), "invitation"),
    ] {
        match t.app.commands.register(r).await {
            Err(DispatchError::Invalid { field: f, .. }) => assert_eq!(f, field),
            Err(DispatchError::Domain(DomainError::Invitation(InvitationError::NotFound))) => {
                assert_eq!(field, "invitation")
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM events").fetch_one(t.app.store.pool()).await.unwrap();
    assert_eq!(n, 0);
    t.finish().await;
}

#[tokio::test]
async fn an_invitation_is_accepted_once_by_its_email_with_its_role() {
    let t = TestApp::new().await;
    let (owner, registered) = t.owner("owner@example.com").await;
    let invitation = t.app.commands.invite(&owner, "Bob@Example.com", "member").await.unwrap();
    assert_eq!(invitation.token.len(), 43);

    let wrong = t.app.commands.register(registration("eve@example.com", Some(&invitation.token))).await;
    assert!(matches!(
        wrong,
        Err(DispatchError::Domain(DomainError::Invitation(InvitationError::EmailMismatch)))
    ));

    let bob =
        t.app.commands.register(registration("bob@example.com", Some(&invitation.token))).await.unwrap();
    assert_eq!((bob.account_id, bob.roles.clone()), (registered.account_id, vec!["member".to_owned()]));
    assert_eq!(bob.account_name, "Acme");

    let again = t.app.commands.register(registration("bob@example.com", Some(&invitation.token))).await;
    assert!(matches!(
        again,
        Err(DispatchError::Domain(DomainError::Invitation(InvitationError::AlreadyAccepted)))
    ));

    let member = user_context(&bob);
    let refused = t.app.commands.invite(&member, "carol@example.com", "member").await;
    assert!(matches!(refused, Err(DispatchError::Forbidden(_))), "members may not invite");
    let owner_invite = t.app.commands.invite(&owner, "dan@example.com", "owner").await;
    assert!(owner_invite.is_ok(), "owners may invite owners");
    t.finish().await;
}

#[tokio::test]
async fn conversations_check_membership_and_hide_other_accounts() {
    let t = TestApp::new().await;
    let (owner, _) = t.owner("owner@example.com").await;
    let invitation = t.app.commands.invite(&owner, "bob@example.com", "member").await.unwrap();
    let bob = user_context(
        &t.app.commands.register(registration("bob@example.com", Some(&invitation.token))).await.unwrap(),
    );
    let (stranger, _) = t.owner("stranger@example.com").await;

    let group = t.app.commands.start_group(&owner, "General", &[]).await.unwrap();
    let id = group.aggregate.id.unwrap();
    let not_member = t.app.commands.post_message(&bob, id, "hi").await;
    assert!(matches!(
        not_member,
        Err(DispatchError::Domain(DomainError::Conversation(ConversationError::NotAMember)))
    ));

    let bob_id = bob.actor.id.unwrap();
    t.app.commands.add_member(&owner, id, bob_id, MemberRole::Member).await.unwrap();
    t.app.commands.post_message(&bob, id, "hi").await.unwrap();
    let not_admin = t.app.commands.add_member(&bob, id, owner.actor.id.unwrap(), MemberRole::Member).await;
    assert!(matches!(
        not_admin,
        Err(DispatchError::Domain(DomainError::Conversation(ConversationError::NotAnAdmin)))
    ));
    let twice = t.app.commands.add_member(&owner, id, bob_id, MemberRole::Member).await;
    assert!(matches!(
        twice,
        Err(DispatchError::Domain(DomainError::Conversation(ConversationError::AlreadyAMember)))
    ));

    let foreign_post = t.app.commands.post_message(&stranger, id, "hello?").await;
    assert!(matches!(foreign_post, Err(DispatchError::NotFound("Conversation"))), "{foreign_post:?}");
    let foreign_member =
        t.app.commands.add_member(&owner, id, stranger.actor.id.unwrap(), MemberRole::Member).await;
    assert!(matches!(foreign_member, Err(DispatchError::NotFound("user"))), "{foreign_member:?}");
    let foreign_group = t.app.commands.start_group(&owner, "Mixed", &[stranger.actor.id.unwrap()]).await;
    assert!(matches!(foreign_group, Err(DispatchError::Invalid { field: "member_ids", .. })));
    let empty = t.app.commands.post_message(&owner, id, "").await;
    assert!(matches!(empty, Err(DispatchError::Invalid { field: "body", .. })));
    let too_long = t.app.commands.post_message(&owner, id, &"x".repeat(10_001)).await;
    assert!(matches!(too_long, Err(DispatchError::Invalid { field: "body", .. })));
    t.finish().await;
}

#[tokio::test]
async fn a_command_needing_no_rows_is_one_statement_and_on_a_stale_state_is_decided_under_the_lock() {
    let t = TestApp::new().await;
    let (owner, _) = t.owner("owner@example.com").await;
    let invite = |email: &'static str| {
        let (t, owner) = (&t, &owner);
        async move {
            let invitation = t.app.commands.invite(owner, email, "member").await.unwrap();
            let user = t.app.commands.register(registration(email, Some(&invitation.token))).await.unwrap();
            user_context(&user).actor.id.unwrap()
        }
    };
    let (bob, carol) = (invite("bob@example.com").await, invite("carol@example.com").await);
    let owner_id = owner.actor.id.unwrap();
    let add =
        |user_id| ConversationCommand::AddMember { actor_id: owner_id, user_id, role: MemberRole::Member };
    // Given two nodes (a dispatcher and an aggregate cache each) over one log, and a group that
    // node A started, so that A holds its state,
    let (a, b) = (Dispatcher::new(t.app.store.clone()), Dispatcher::new(t.app.store.clone()));
    let id = Uuid::now_v7();
    let start = ConversationCommand::StartGroup {
        conversation_id: id,
        account_id: owner.account_id,
        title: Name::parse("General").unwrap(),
        creator_id: owner_id,
        member_ids: Vec::new(),
    };
    let started = a.execute::<Conversation>(&owner, &id.to_string(), start).await.unwrap();
    assert_eq!(a.one_statement_commands(), 1, "a new stream with no rows to write: one statement");
    // when node B adds Bob, A's state is one version behind;
    b.execute::<Conversation>(&owner, &id.to_string(), add(bob)).await.unwrap();
    assert_eq!(b.one_statement_commands(), 0, "B held no state: it locked and read the stream");
    // then A adding Bob again, decided on its stale state, is refused once the append finds it
    // stale and the command is decided again on the stream under its lock, and nothing is written;
    let again = a.execute::<Conversation>(&owner, &id.to_string(), add(bob)).await;
    assert!(
        matches!(
            again,
            Err(DispatchError::Domain(DomainError::Conversation(ConversationError::AlreadyAMember)))
        ),
        "{again:?}"
    );
    // and A, now current, adds Carol in one statement, after Bob.
    let carol_added = a.execute::<Conversation>(&owner, &id.to_string(), add(carol)).await.unwrap();
    assert_eq!(carol_added.version, started.version + 2);
    assert_eq!(a.one_statement_commands(), 2);
    let members: Vec<String> = t
        .app
        .store
        .read_stream(&StreamKey::new("Conversation", id.to_string()), 0, None)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event_type == "MemberAdded")
        .map(|e| e.payload["user_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(members, [owner_id, bob, carol].map(|u| u.to_string()));
    t.finish().await;
}

#[tokio::test]
async fn a_long_conversation_loads_from_a_snapshot_that_is_only_a_cache() {
    let t = TestApp::new().await;
    let (owner, _) = t.owner("owner@example.com").await;
    let group = t.app.commands.start_group(&owner, "General", &[]).await.unwrap();
    let id = group.aggregate.id.unwrap();
    for i in 0..250 {
        t.app.commands.post_message(&owner, id, &format!("m{i}")).await.unwrap();
    }
    let pool = t.app.store.pool();
    let (version,): (i64,) = sqlx::query_as("SELECT version FROM snapshots WHERE stream_id = $1")
        .bind(id.to_string())
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(version, 200, "a snapshot every 100 events");
    let done = t.app.commands.post_message(&owner, id, "after the snapshot").await.unwrap();
    assert_eq!(done.aggregate.messages_posted, 251, "snapshot plus tail is the whole state");
    sqlx::query("DELETE FROM snapshots").execute(pool).await.unwrap();
    let done = t.app.commands.post_message(&owner, id, "without it").await.unwrap();
    assert_eq!((done.aggregate.messages_posted, done.version), (252, 254));
    t.finish().await;
}

#[tokio::test]
async fn commands_feed_the_read_models() {
    let t = TestApp::new().await;
    let (owner, registered) = t.owner("owner@example.com").await;
    let group = t.app.commands.start_group(&owner, "General", &[]).await.unwrap();
    let id = group.aggregate.id.unwrap();
    let mut last = group.cursor.unwrap();
    for i in 0..3 {
        last = t.app.commands.post_message(&owner, id, &format!("m{i}")).await.unwrap().cursor.unwrap();
    }
    // Runners stop at what is readable: wait until every committed event is.
    t.settle().await;
    let mut runners: Vec<Runner> = t
        .app
        .projections
        .all()
        .iter()
        .map(|p| Runner::new(t.app.store.clone(), p.clone(), t.app.lease_options()))
        .collect();
    for r in &mut runners {
        assert!(r.acquire().await.unwrap());
        while r.step().await.unwrap() != parley_projections::StepOutcome::Idle {}
    }
    let pool = t.app.store.pool();
    wait_for(pool, &["users", "conversations", "messages"], last, Duration::from_secs(1)).await.unwrap();
    let (name, roles): (String, Vec<String>) = sqlx::query_as("SELECT name, roles FROM users WHERE id = $1")
        .bind(registered.user_id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!((name.as_str(), roles), ("Owner", vec!["owner".to_owned()]));
    let (title, count, members): (String, i64, i64) = sqlx::query_as(
        "SELECT title, message_count, (SELECT count(*) FROM conversation_members m WHERE m.conversation_id = c.id) \
         FROM conversations c WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((title.as_str(), count, members), ("General", 3, 1));
    let bodies: Vec<(String, i64)> =
        sqlx::query_as("SELECT body, seq FROM messages WHERE conversation_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(bodies, vec![("m0".into(), 3), ("m1".into(), 4), ("m2".into(), 5)]);
    let (partitions,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent WHERE c.relname = 'messages'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(partitions >= 1, "messages live in monthly partitions");
    t.finish().await;
}
