//! Posts and read marks committed in groups: each lands exactly once, in each poster's order,
//! with its own metadata; a stale state (another node wrote) never refuses or loses a post.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parley_aggregates::conversation::{
    Conversation, ConversationCommand, ConversationError, ConversationEvent, MemberRole, MessageFact,
};
use parley_aggregates::values::Name;
use parley_aggregates::DomainError;
use parley_api::{App, Config};
use parley_commands::password::PasswordHasher;
use parley_commands::services::Registration;
use parley_commands::{CommandContext, DispatchError, Dispatcher, GroupCommit};
use parley_eventstore::StreamKey;
use parley_tests::{user_context, TestApp};
use uuid::Uuid;

const POSTERS: usize = 24;
const POSTS: usize = 25;
const CONVERSATIONS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_posts_are_committed_in_groups_each_once_in_order() {
    let t = Arc::new(TestApp::with_pool(12).await);
    let (owner, _) = t.owner("owner@example.com").await;
    let mut conversations = Vec::new();
    for i in 0..CONVERSATIONS {
        let group = t.app.commands.start_group(&owner, &format!("room {i}"), &[]).await.unwrap();
        conversations.push(group.aggregate.id.unwrap());
    }
    let conversations = Arc::new(conversations);
    let tasks: Vec<_> = (0..POSTERS)
        .map(|poster| {
            let (t, owner, conversations) = (t.clone(), owner.clone(), conversations.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for i in 0..POSTS {
                    // Each poster has its own correlation id, to find its events by.
                    let mut ctx = owner.clone();
                    ctx.correlation_id = Uuid::now_v7();
                    let conversation = conversations[(poster + i) % CONVERSATIONS];
                    let done = t
                        .app
                        .commands
                        .post_message(&ctx, conversation, &format!("{poster}/{i}"))
                        .await
                        .unwrap();
                    answers.push((ctx.correlation_id, done.version, done.cursor.unwrap()));
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.unwrap());
    }
    assert_eq!(answers.len(), POSTERS * POSTS);

    t.settle().await;
    let rows: Vec<(String, i64, String, String, String)> = sqlx::query_as(
        "SELECT stream_id, version, payload->>'body', metadata->>'correlation_id', transaction_id::text \
         FROM events WHERE event_type = 'MessagePosted' ORDER BY transaction_id, position",
    )
    .fetch_all(t.app.store.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), POSTERS * POSTS, "every post appended once");
    // Each answer names its own event: its correlation id, at the version it was told.
    let by_correlation: HashMap<&str, (&str, i64)> = rows
        .iter()
        .map(|(stream, version, _, correlation, _)| (correlation.as_str(), (stream.as_str(), *version)))
        .collect();
    assert_eq!(by_correlation.len(), rows.len(), "one event per command, with its own metadata");
    for (correlation, version, _) in &answers {
        assert_eq!(by_correlation[correlation.to_string().as_str()].1, *version);
    }
    // Every conversation's versions are contiguous (the start is version 1).
    for conversation in conversations.iter() {
        let stream = StreamKey::new("Conversation", conversation.to_string());
        let events = t.app.store.read_stream(&stream, 0, None).await.unwrap();
        assert!(events.iter().enumerate().all(|(i, e)| e.version == i as i64 + 1));
    }
    // Each poster's messages are in its order in the log.
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (_, _, body, _, _) in &rows {
        let (poster, i) = body.split_once('/').unwrap();
        let i: usize = i.parse().unwrap();
        assert!(last.insert(poster, i).is_none_or(|prev| prev < i), "poster {poster} out of order");
    }
    // And they were grouped: fewer transactions than posts.
    let transactions: HashSet<&str> = rows.iter().map(|r| r.4.as_str()).collect();
    assert!(
        transactions.len() < rows.len(),
        "{} posts in {} transactions: none grouped",
        rows.len(),
        transactions.len()
    );
    // The write-side index row of every message was written with it.
    let (facts,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM message_facts").fetch_one(t.app.store.pool()).await.unwrap();
    assert_eq!(facts as usize, POSTERS * POSTS);
    Arc::into_inner(t).expect("no other owner").finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_stale_state_neither_refuses_nor_loses_posts() {
    let t = TestApp::new().await;
    // Node B: its own pool, store and aggregate cache over the same database.
    let mut config = Config::new(t.db.url());
    config.pool_size = 4;
    let b = App::connect_with(&config, false, PasswordHasher::fast_insecure()).await.unwrap();

    let (owner, _) = t.owner("owner@example.com").await;
    let bob = invited(&t, &owner, "bob@example.com").await;
    let group = t.app.commands.start_group(&owner, "General", &[]).await.unwrap();
    let id = group.aggregate.id.unwrap();
    // Node A decides on its cached state of the conversation from now on.
    t.app.commands.post_message(&owner, id, "first, on A").await.unwrap();
    let refused = t.app.commands.post_message(&bob, id, "not yet a member").await;
    assert!(matches!(refused, Err(DispatchError::Domain(_))), "{refused:?}");

    // Node B adds Bob and posts: A's cached state is now two versions behind.
    b.commands.add_member(&owner, id, bob.actor.id.unwrap(), MemberRole::Member).await.unwrap();
    b.commands.post_message(&owner, id, "on B").await.unwrap();

    // On A, Bob's post is decided again on the state under the lock, not refused on the stale one.
    let on_a = t.app.commands.post_message(&bob, id, "now a member, on A").await.unwrap();
    let started = group.version;
    assert_eq!(on_a.version, started + 4, "after: a post, the member, the post on B");
    // B writes again; the owner's post on A, decided in a group on the stale state, fails its
    // expected version there, runs alone and lands after B's event.
    b.commands.post_message(&owner, id, "on B again").await.unwrap();
    let again = t.app.commands.post_message(&owner, id, "again on A").await.unwrap();
    assert_eq!(again.version, started + 6);
    let bodies = bodies(&t, id).await;
    assert_eq!(bodies, ["first, on A", "on B", "now a member, on A", "on B again", "again on A"]);
    b.store.pool().close().await;
    t.finish().await;
}

/// The bodies of the messages posted into conversation `id`, in the stream's order.
async fn bodies(t: &TestApp, id: Uuid) -> Vec<String> {
    let stream = StreamKey::new("Conversation", id.to_string());
    let events = t.app.store.read_stream(&stream, 0, None).await.unwrap();
    events.iter().filter_map(|e| e.payload["body"].as_str().map(str::to_owned)).collect()
}

/// A new user of the owner's account, invited and registered.
async fn invited(t: &TestApp, owner: &CommandContext, email: &str) -> CommandContext {
    let invitation = t.app.commands.invite(owner, email, "member").await.unwrap();
    let user = t
        .app
        .commands
        .register(Registration {
            name: email.split('@').next().unwrap_or(email).into(),
            email: email.into(),
            password: "correct horse battery".into(),
            invitation_token: Some(invitation.token.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    user_context(&user)
}

/// `n` new users of the owner's account, each added to conversation `id`.
async fn members(t: &TestApp, owner: &CommandContext, id: Uuid, n: usize) -> Vec<CommandContext> {
    let mut members = Vec::new();
    for i in 0..n {
        let member = invited(t, owner, &format!("member{i}@example.com")).await;
        t.app.commands.add_member(owner, id, member.actor.id.unwrap(), MemberRole::Member).await.unwrap();
        members.push(member);
    }
    members
}

/// `command` on conversation `id` run through a group commit, then alone through the
/// dispatcher: the answers of both.
async fn in_group_and_alone(
    t: &TestApp,
    ctx: &CommandContext,
    id: Uuid,
    command: ConversationCommand,
) -> [Result<parley_commands::Executed<Conversation>, DispatchError>; 2] {
    let grouped = GroupCommit::<Conversation>::new(Dispatcher::new(t.app.store.clone()));
    let in_group = grouped.execute(ctx, &id.to_string(), command.clone()).await;
    let alone =
        Dispatcher::new(t.app.store.clone()).execute::<Conversation>(ctx, &id.to_string(), command).await;
    [in_group, alone]
}

/// The id of the message a post's events made.
fn posted(events: &[ConversationEvent]) -> Uuid {
    match &events[0] {
        ConversationEvent::MessagePosted { message_id, .. } => *message_id,
        other => panic!("not a post: {other:?}"),
    }
}

fn start_group(ctx: &CommandContext, id: Uuid, title: &str) -> ConversationCommand {
    ConversationCommand::StartGroup {
        conversation_id: id,
        account_id: ctx.account_id,
        title: Name::parse(title).unwrap(),
        creator_id: ctx.actor.id.unwrap(),
        member_ids: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_starts_a_stream_which_exists_is_decided_on_what_the_stream_holds() {
    let t = TestApp::new().await;
    let (owner, _) = t.owner("owner@example.com").await;
    let (other, _) = t.owner("other@example.com").await;
    let taken = t.app.commands.start_group(&owner, "General", &[]).await.unwrap();
    let id = taken.aggregate.id.unwrap();
    let events = || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM events").fetch_one(t.app.store.pool()).await.unwrap();
        n
    };
    let before = events().await;

    // Given nodes that have never seen the conversation (an empty cache each), which take a
    // command starting a stream to find it empty without reading it,
    let alone = Dispatcher::new(t.app.store.clone());
    let grouped = GroupCommit::<Conversation>::new(Dispatcher::new(t.app.store.clone()));
    // when its id is started again, alone or in a group, by its account or another,
    let again =
        alone.execute::<Conversation>(&owner, &id.to_string(), start_group(&owner, id, "Again")).await;
    let in_group = grouped.execute(&owner, &id.to_string(), start_group(&owner, id, "Again")).await;
    let elsewhere = Dispatcher::new(t.app.store.clone())
        .execute::<Conversation>(&other, &id.to_string(), start_group(&other, id, "Theirs"))
        .await;
    // then the answer is the one the stream's state gives, not a conflict, and nothing is written.
    assert!(matches!(again, Err(DispatchError::Domain(_) | DispatchError::NotFound(_))), "{again:?}");
    assert!(matches!(in_group, Err(DispatchError::Domain(_))), "{in_group:?}");
    assert!(matches!(elsewhere, Err(DispatchError::NotFound(_))), "{elsewhere:?}");
    assert_eq!(events().await, before);

    // And in one group with new conversations, the new ones start and the taken one is refused.
    let fresh: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
    let grouped = GroupCommit::<Conversation>::new(Dispatcher::new(t.app.store.clone()));
    let outcomes = futures::future::join_all(fresh.iter().chain([&id]).map(|c| {
        let (grouped, owner) = (grouped.clone(), owner.clone());
        async move { grouped.execute(&owner, &c.to_string(), start_group(&owner, *c, "Room")).await }
    }))
    .await;
    for outcome in &outcomes[..fresh.len()] {
        assert_eq!(outcome.as_ref().unwrap().version, taken.version, "{outcome:?}");
    }
    assert!(matches!(outcomes.last().unwrap(), Err(DispatchError::Domain(_))), "{outcomes:?}");
    assert_eq!(events().await, before + fresh.len() as i64 * taken.version);
    // The new streams' chains, computed by the writer of a group that only starts streams, hold.
    let report = parley_replay::verify(t.app.store.pool(), None, &[]).await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_read_marks_are_committed_in_groups_once_each() {
    const READERS: usize = 12;
    let t = Arc::new(TestApp::with_pool(12).await);
    let (owner, _) = t.owner("owner@example.com").await;
    let group = t.app.commands.start_group(&owner, "General", &[]).await.unwrap();
    let id = group.aggregate.id.unwrap();
    let other = t.app.commands.start_group(&owner, "Other", &[]).await.unwrap().aggregate.id.unwrap();
    let readers = members(&t, &owner, id, READERS).await;
    let first = posted(&t.app.commands.post_message(&owner, id, "first").await.unwrap().events);
    let last_id = posted(&t.app.commands.post_message(&owner, id, "last").await.unwrap().events);
    let elsewhere = posted(&t.app.commands.post_message(&owner, other, "elsewhere").await.unwrap().events);

    // Given twelve members marking the first message read, then the last, twice, at once,
    let tasks: Vec<_> = readers
        .iter()
        .cloned()
        .map(|reader| {
            let t = t.clone();
            tokio::spawn(async move {
                let mut versions = Vec::new();
                for message_id in [first, last_id, last_id] {
                    let done = t.app.commands.mark_read(&reader, id, message_id, None).await.unwrap();
                    versions.push(done.fresh().unwrap().events.len());
                }
                versions
            })
        })
        .collect();
    // then each mark but the repeated one appends its event, once,
    for task in tasks {
        assert_eq!(task.await.unwrap(), [1, 1, 0], "a repeated mark changes nothing");
    }
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT payload->>'user_id', transaction_id::text FROM events \
         WHERE event_type = 'MessagesRead' AND stream_id = $1 ORDER BY position",
    )
    .bind(id.to_string())
    .fetch_all(t.app.store.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), READERS * 2);
    // in fewer transactions than marks (they were committed in groups);
    let transactions: HashSet<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert!(transactions.len() < rows.len(), "{} marks in {} transactions", rows.len(), transactions.len());
    // a mark of a message that is not the conversation's is refused, and a stranger's too.
    let reader = &readers[0];
    let foreign = t.app.commands.mark_read(reader, id, elsewhere, None).await;
    assert!(matches!(foreign, Err(DispatchError::Domain(_))), "{foreign:?}");
    let (stranger, _) = t.owner("stranger@example.com").await;
    let not_theirs = t.app.commands.mark_read(&stranger, id, last_id, None).await;
    assert!(matches!(not_theirs, Err(DispatchError::NotFound(_))), "{not_theirs:?}");
    let (marks,): (i64,) = sqlx::query_as("SELECT count(*) FROM events WHERE event_type = 'MessagesRead'")
        .fetch_one(t.app.store.pool())
        .await
        .unwrap();
    assert_eq!(marks as usize, READERS * 2, "nothing written for refused marks");
    Arc::into_inner(t).expect("no other owner").finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reactions_and_removals_are_committed_in_groups_and_the_same_one_twice_is_made_once() {
    const MEMBERS: usize = 12;
    let t = Arc::new(TestApp::with_pool(12).await);
    let (owner, _) = t.owner("owner@example.com").await;
    let id = t.app.commands.start_group(&owner, "General", &[]).await.unwrap().aggregate.id.unwrap();
    let members = members(&t, &owner, id, MEMBERS).await;
    let message = posted(&t.app.commands.post_message(&owner, id, "react to me").await.unwrap().events);

    // Given twelve members reacting at once,
    let react_all = |emoji: &'static str, twice: bool| {
        let tasks: Vec<_> = members
            .iter()
            .cloned()
            .map(|member| {
                let t = t.clone();
                tokio::spawn(async move {
                    let react = || async { t.app.commands.add_reaction(&member, message, emoji, None).await };
                    let answers = match twice {
                        true => {
                            let (a, b) = tokio::join!(react(), react());
                            vec![a, b]
                        }
                        false => vec![react().await],
                    };
                    answers
                        .into_iter()
                        .map(|r| match r.unwrap() {
                            parley_commands::Idempotent::Fresh(r) => (r.reaction.reaction_id, r.created),
                            other => panic!("{other:?}"),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect::<Vec<_>>();
        futures::future::join_all(tasks)
    };
    let rows = |emoji: &'static str| {
        let t = t.clone();
        async move {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT payload->>'user_id', transaction_id::text FROM events \
                 WHERE event_type = 'ReactionAdded' AND payload->>'emoji' = $1",
            )
            .bind(emoji)
            .fetch_all(t.app.store.pool())
            .await
            .unwrap();
            rows
        }
    };
    for answers in react_all("👍", false).await {
        assert!(answers.unwrap()[0].1, "made");
    }
    // then each reaction is made, in fewer transactions than reactions (committed in groups);
    let made = rows("👍").await;
    assert_eq!(made.len(), MEMBERS);
    let transactions: HashSet<&str> = made.iter().map(|r| r.1.as_str()).collect();
    assert!(
        transactions.len() < made.len(),
        "{} reactions in {} transactions",
        made.len(),
        transactions.len()
    );

    // and each member sending another emoji twice at once gets it made once: one answer made
    // it, the other found it.
    let mut parties = Vec::new();
    for answers in react_all("🎉", true).await {
        let answers = answers.unwrap();
        let [(a, made_a), (b, made_b)] = answers[..] else { panic!("{answers:?}") };
        assert_eq!(a, b, "both answers name the same reaction");
        assert!(made_a != made_b, "one made it, one found it");
        parties.push(a);
    }
    let twice = rows("🎉").await;
    let users: HashSet<&str> = twice.iter().map(|r| r.0.as_str()).collect();
    assert_eq!((twice.len(), users.len()), (MEMBERS, MEMBERS), "one reaction per member");
    let (facts,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM reaction_facts").fetch_one(t.app.store.pool()).await.unwrap();
    assert_eq!(facts as usize, 2 * MEMBERS, "each with its index row");

    // When each member takes their 🎉 back twice at once (the reactions answered in members'
    // order), one removal takes it and the other finds it gone,
    let someone_elses = t.app.commands.remove_reaction(&members[1], parties[0]).await;
    assert!(
        matches!(
            someone_elses,
            Err(DispatchError::Domain(DomainError::Conversation(ConversationError::NotTheAuthor)))
        ),
        "{someone_elses:?}"
    );
    let tasks: Vec<_> = members
        .iter()
        .cloned()
        .zip(parties)
        .map(|(member, reaction)| {
            let t = t.clone();
            tokio::spawn(async move {
                let remove = || t.app.commands.remove_reaction(&member, reaction);
                let (a, b) = tokio::join!(remove(), remove());
                [a, b].map(|r| r.map(|done| done.events.len()))
            })
        })
        .collect();
    for task in tasks {
        let answers = task.await.unwrap();
        let gone = |r: &Result<usize, DispatchError>| {
            matches!(
                r,
                Err(DispatchError::NotFound("reaction"))
                    | Err(DispatchError::Domain(DomainError::Conversation(
                        ConversationError::ReactionNotFound
                    )))
            )
        };
        assert!(
            matches!(answers, [Ok(1), ref b] if gone(b)) || matches!(answers, [ref a, Ok(1)] if gone(a)),
            "{answers:?}"
        );
    }
    // then each is removed once, in fewer transactions than removals, with its row.
    let removed: Vec<(String, String)> = sqlx::query_as(
        "SELECT payload->>'user_id', transaction_id::text FROM events WHERE event_type = 'ReactionRemoved'",
    )
    .fetch_all(t.app.store.pool())
    .await
    .unwrap();
    assert_eq!(removed.len(), MEMBERS);
    let transactions: HashSet<&str> = removed.iter().map(|r| r.1.as_str()).collect();
    assert!(transactions.len() < MEMBERS, "{MEMBERS} removals in {} transactions", transactions.len());
    let (facts,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM reaction_facts").fetch_one(t.app.store.pool()).await.unwrap();
    assert_eq!(facts as usize, MEMBERS, "the 👍 rows are left");
    Arc::into_inner(t).expect("no other owner").finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaction_decided_on_a_stale_fact_is_refused_by_the_write_side() {
    let t = TestApp::new().await;
    let (owner, _) = t.owner("owner@example.com").await;
    let id = t.app.commands.start_group(&owner, "General", &[]).await.unwrap().aggregate.id.unwrap();
    let message = posted(&t.app.commands.post_message(&owner, id, "soon gone").await.unwrap().events);
    // Given the message's fact as a reaction read it before its group, then the message deleted,
    let fact =
        MessageFact { message_id: message, author_id: owner.actor.id.unwrap(), deleted: false, version: 1 };
    t.app.commands.delete_message(&owner, id, message).await.unwrap();
    let events = || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM events").fetch_one(t.app.store.pool()).await.unwrap();
        n
    };
    let before = events().await;
    // when the reaction decided on the stale fact reaches the log, in a group or alone,
    let react = ConversationCommand::AddReaction {
        reaction_id: Uuid::now_v7(),
        actor_id: owner.actor.id.unwrap(),
        message: Some(fact),
        emoji: parley_aggregates::values::Emoji::parse("👍").unwrap(),
        existing: None,
    };
    // then it is refused as the state under the lock says, and nothing is written.
    for refused in in_group_and_alone(&t, &owner, id, react).await {
        assert!(
            matches!(
                refused,
                Err(DispatchError::Domain(DomainError::Conversation(ConversationError::MessageDeleted)))
            ),
            "{refused:?}"
        );
    }
    assert_eq!(events().await, before);
    let (facts,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM reaction_facts").fetch_one(t.app.store.pool()).await.unwrap();
    assert_eq!(facts, 0);
    t.finish().await;
}

/// The transactions the events of `event_type` in conversation `id` landed in, one per event.
async fn transactions_of(t: &TestApp, id: Uuid, event_type: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT payload->>'user_id', transaction_id::text FROM events \
         WHERE event_type = $1 AND stream_id = $2 ORDER BY position",
    )
    .bind(event_type)
    .bind(id.to_string())
    .fetch_all(t.app.store.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_joins_and_leaves_are_committed_in_groups_once_each() {
    const JOINERS: usize = 12;
    let t = Arc::new(TestApp::with_pool(12).await);
    let (owner, _) = t.owner("owner@example.com").await;
    let id = t.app.commands.start_group(&owner, "General", &[]).await.unwrap().aggregate.id.unwrap();
    let mut joiners = Vec::new();
    for i in 0..JOINERS {
        joiners.push(invited(&t, &owner, &format!("joiner{i}@example.com")).await);
    }
    // Given an admin adding twelve users at once, the first of them twice,
    let twice = joiners[0].actor.id.unwrap();
    let tasks: Vec<_> = joiners
        .iter()
        .map(|j| j.actor.id.unwrap())
        .chain([twice])
        .map(|user_id| {
            let (t, owner) = (t.clone(), owner.clone());
            tokio::spawn(
                async move { t.app.commands.add_member(&owner, id, user_id, MemberRole::Member).await },
            )
        })
        .collect();
    let mut refused = Vec::new();
    for task in tasks {
        if let Err(e) = task.await.unwrap() {
            refused.push(e);
        }
    }
    // then each joins once, and the repeat is refused as a member already,
    assert!(
        matches!(
            refused[..],
            [DispatchError::Domain(DomainError::Conversation(ConversationError::AlreadyAMember))]
        ),
        "{refused:?}"
    );
    let joins = transactions_of(&t, id, "MemberAdded").await;
    // (the creator's own membership is the first)
    assert_eq!(joins.len(), JOINERS + 1);
    let joined: HashSet<&str> = joins.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(joined.len(), JOINERS + 1, "one join per user");
    // in fewer transactions than joins (they were committed in groups);
    let transactions: HashSet<&str> = joins[1..].iter().map(|r| r.1.as_str()).collect();
    assert!(transactions.len() < JOINERS, "{JOINERS} joins in {} transactions", transactions.len());
    // a user who is not the account's is not found, and nothing is written for them;
    let (stranger, stranger_user) = t.owner("stranger@example.com").await;
    let foreign = t.app.commands.add_member(&owner, id, stranger_user.user_id, MemberRole::Member).await;
    assert!(matches!(foreign, Err(DispatchError::NotFound("user"))), "{foreign:?}");
    let not_admin =
        t.app.commands.add_member(&joiners[1], id, joiners[2].actor.id.unwrap(), MemberRole::Member).await;
    assert!(matches!(not_admin, Err(DispatchError::Domain(_))), "{not_admin:?}");
    assert_eq!(transactions_of(&t, id, "MemberAdded").await.len(), JOINERS + 1);
    drop(stranger);

    // and when every joiner leaves at once, each leaves once, in groups.
    let tasks: Vec<_> = joiners
        .iter()
        .cloned()
        .map(|joiner| {
            let t = t.clone();
            tokio::spawn(async move {
                let me = joiner.actor.id.unwrap();
                t.app.commands.remove_member(&joiner, id, me).await.map(|done| done.events.len())
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 1);
    }
    let leaves = transactions_of(&t, id, "MemberRemoved").await;
    assert_eq!(leaves.len(), JOINERS);
    let transactions: HashSet<&str> = leaves.iter().map(|r| r.1.as_str()).collect();
    assert!(transactions.len() < JOINERS, "{JOINERS} leaves in {} transactions", transactions.len());
    let again = t.app.commands.remove_member(&joiners[0], id, twice).await;
    assert!(matches!(again, Err(DispatchError::Domain(_) | DispatchError::NotFound(_))), "{again:?}");
    Arc::into_inner(t).expect("no other owner").finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_edits_and_deletions_are_committed_in_groups_and_one_message_changes_one_at_a_time() {
    const AUTHORS: usize = 12;
    let t = Arc::new(TestApp::with_pool(12).await);
    let (owner, _) = t.owner("owner@example.com").await;
    let id = t.app.commands.start_group(&owner, "General", &[]).await.unwrap().aggregate.id.unwrap();
    let authors = members(&t, &owner, id, AUTHORS).await;
    let mut messages = Vec::new();
    for author in &authors {
        messages.push(posted(&t.app.commands.post_message(author, id, "first draft").await.unwrap().events));
    }
    let pool = t.app.store.pool().clone();
    let version = |message: Uuid| {
        let pool = pool.clone();
        async move {
            let (version, deleted): (i32, bool) =
                sqlx::query_as("SELECT version, deleted FROM message_facts WHERE message_id = $1")
                    .bind(message)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            (version, deleted)
        }
    };

    // Given every author editing their message twice at once,
    let tasks: Vec<_> = authors
        .iter()
        .cloned()
        .zip(messages.clone())
        .map(|(author, message)| {
            let t = t.clone();
            tokio::spawn(async move {
                let edit = |body: &'static str| t.app.commands.edit_message(&author, id, message, body, None);
                let (a, b) = tokio::join!(edit("second draft"), edit("third draft"));
                (a.map(|done| done.events.len()), b.map(|done| done.events.len()))
            })
        })
        .collect();
    // then both land, one after the other, each moving the message's version by one,
    for task in tasks {
        let (a, b) = task.await.unwrap();
        assert!(matches!((&a, &b), (Ok(1), Ok(1))), "{a:?} {b:?}");
    }
    for message in &messages {
        assert_eq!(version(*message).await, (3, false));
    }
    let edits: Vec<(String, String)> = sqlx::query_as(
        "SELECT payload->>'message_id', transaction_id::text FROM events WHERE event_type = 'MessageEdited'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(edits.len(), 2 * AUTHORS);
    // in fewer transactions than edits (committed in groups);
    let transactions: HashSet<&str> = edits.iter().map(|r| r.1.as_str()).collect();
    assert!(transactions.len() < edits.len(), "{} edits in {} transactions", edits.len(), transactions.len());
    // an edit asking for a version the message left is refused with the current one,
    let stale = t.app.commands.edit_message(&authors[0], id, messages[0], "late", Some(1)).await;
    assert!(
        matches!(
            stale,
            Err(DispatchError::Domain(DomainError::Conversation(ConversationError::StaleMessage {
                current: 3
            })))
        ),
        "{stale:?}"
    );

    // and when the owner and each author delete the author's message at once, it is deleted once.
    let tasks: Vec<_> = authors
        .iter()
        .cloned()
        .zip(messages.clone())
        .map(|(author, message)| {
            let (t, owner) = (t.clone(), owner.clone());
            tokio::spawn(async move {
                let (a, b) = tokio::join!(
                    t.app.commands.delete_message(&author, id, message),
                    t.app.commands.delete_message(&owner, id, message)
                );
                let mut made = [a.unwrap().events.len(), b.unwrap().events.len()];
                made.sort();
                made
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), [0, 1], "one deletion made it, the other found it deleted");
    }
    for message in &messages {
        assert_eq!(version(*message).await, (4, true));
    }
    let (deletions,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM events WHERE event_type = 'MessageDeleted'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(deletions as usize, AUTHORS);
    Arc::into_inner(t).expect("no other owner").finish().await;
}

#[tokio::test]
async fn an_edit_decided_on_a_stale_fact_is_refused_by_the_write_side() {
    let t = TestApp::new().await;
    let (owner, _) = t.owner("owner@example.com").await;
    let id = t.app.commands.start_group(&owner, "General", &[]).await.unwrap().aggregate.id.unwrap();
    let message = posted(&t.app.commands.post_message(&owner, id, "draft").await.unwrap().events);
    // Given the message's fact as an edit read it before its group, then another edit landed,
    let fact =
        MessageFact { message_id: message, author_id: owner.actor.id.unwrap(), deleted: false, version: 1 };
    t.app.commands.edit_message(&owner, id, message, "landed first", None).await.unwrap();
    let before = t.head().await;
    // when the edit decided on the stale fact reaches the log, in a group or alone,
    let edit = ConversationCommand::EditMessage {
        actor_id: owner.actor.id.unwrap(),
        message: Some(fact),
        body: parley_aggregates::values::MessageBody::parse("decided on version 1").unwrap(),
        expected_version: None,
    };
    // then it is refused with the version the message is at, and nothing is written.
    for refused in in_group_and_alone(&t, &owner, id, edit).await {
        assert!(
            matches!(
                refused,
                Err(DispatchError::Domain(DomainError::Conversation(ConversationError::StaleMessage {
                    current: 2
                })))
            ),
            "{refused:?}"
        );
    }
    assert_eq!(t.head().await, before);
    let (body,): (String,) =
        sqlx::query_as("SELECT payload->>'body' FROM events WHERE event_type = 'MessageEdited'")
            .fetch_one(t.app.store.pool())
            .await
            .unwrap();
    assert_eq!(body, "landed first");
    t.finish().await;
}

/// Remembers every event id the node's reader of the log reads, and wakes waiters after each batch.
#[derive(Default)]
struct Sees {
    read: std::sync::Mutex<HashSet<Uuid>>,
    batch: tokio::sync::Notify,
}

impl parley_eventstore::LogObserver for Sees {
    fn read(&self, events: &[parley_eventstore::RecordedEvent]) {
        self.read.lock().unwrap().extend(events.iter().map(|e| e.event_id));
        self.batch.notify_waiters();
    }
}

impl Sees {
    async fn until_read(&self, event_id: Uuid) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let batch = self.batch.notified();
            if self.read.lock().unwrap().contains(&event_id) {
                return;
            }
            tokio::time::timeout_at(deadline, batch).await.expect("the node's reader reads the event");
        }
    }
}

/// Given node A, which reads the log (its one reader) and holds a conversation's state, and
/// node B, which posts into the conversation; when A's reader has read B's post and A posts,
/// then A decides on the state the log moved on to: no append of A is refused for a stale
/// state (before, each was refused once and decided again), and every post lands once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_read_another_nodes_post_decides_on_the_moved_on_state() {
    let t = TestApp::new().await;
    let reads = t.app.store.share_reads(1000).await.unwrap();
    let sees = Arc::new(Sees::default());
    t.app.store.observe_log(&(sees.clone() as Arc<dyn parley_eventstore::LogObserver>));
    let mut config = Config::new(t.db.url());
    config.pool_size = 4;
    let b = App::connect_with(&config, false, PasswordHasher::fast_insecure()).await.unwrap();

    let (owner, _) = t.owner("owner@example.com").await;
    let group = t.app.commands.start_group(&owner, "General", &[]).await.unwrap();
    let id = group.aggregate.id.unwrap();
    t.app.commands.post_message(&owner, id, "first, on A").await.unwrap();
    let a = t.app.commands.dispatcher();
    let stale_before = a.stale_appends();

    for round in 0..3 {
        let on_b = b.commands.post_message(&owner, id, &format!("on B {round}")).await.unwrap();
        sees.until_read(on_b.appended.last().unwrap().event_id).await;
        let on_a = t.app.commands.post_message(&owner, id, &format!("on A {round}")).await.unwrap();
        assert_eq!(on_a.version, on_b.version + 1);
    }
    assert_eq!(a.stale_appends(), stale_before, "no append of A was refused for a stale state");
    let bodies = bodies(&t, id).await;
    assert_eq!(bodies, ["first, on A", "on B 0", "on A 0", "on B 1", "on A 1", "on B 2", "on A 2"]);
    reads.stop().await;
    b.store.pool().close().await;
    t.finish().await;
}
