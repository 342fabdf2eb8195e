//! The projection runtime: atomic batches, fenced leases, rebuilds beside the live generation.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parley_eventstore::RecordedEvent;
use parley_projections::read_models::MessagesProjection;
use parley_projections::{
    list, rebuild, schema_name, wait_for, Decisions, Projection, ProjectionError, Runner, StepOutcome,
};
use parley_tests::{assert_same_rows, dump, TestApp};
use sqlx::PgConnection;
use tokio::sync::Notify;
use uuid::Uuid;

/// The messages projection, but the first batch stops forever halfway through its writes,
/// inside its transaction: the moment to kill the process.
struct StallsMidBatch {
    inner: MessagesProjection,
    stalled: Arc<Notify>,
    armed: AtomicBool,
}

#[async_trait]
impl Projection for StallsMidBatch {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn version(&self) -> i32 {
        self.inner.version()
    }
    fn tables(&self) -> &'static [&'static str] {
        self.inner.tables()
    }
    fn schema(&self) -> &'static str {
        self.inner.schema()
    }
    fn decides(&self) -> Decisions {
        self.inner.decides()
    }
    async fn apply(&self, conn: &mut PgConnection, events: &[&RecordedEvent]) -> Result<(), ProjectionError> {
        let (first, rest) = events.split_at(events.len() / 2);
        self.inner.apply(conn, first).await?;
        if self.armed.swap(false, Ordering::SeqCst) {
            self.stalled.notify_one();
            std::future::pending::<()>().await;
        }
        self.inner.apply(conn, rest).await
    }
}

async fn drive_until_idle(runner: &mut Runner) {
    loop {
        match runner.step().await.unwrap() {
            StepOutcome::Applied(_) | StepOutcome::HandedOver(_) => {}
            StepOutcome::Idle => return,
            StepOutcome::NotLeader => panic!("runner lost its lease"),
        }
    }
}

#[tokio::test]
async fn a_projection_killed_mid_batch_and_restarted_equals_a_rebuild_from_zero() {
    let t = TestApp::new().await;
    let (account, conversation) = (Uuid::now_v7(), Uuid::now_v7());
    t.append_messages(account, conversation, 1500, 100).await;
    let stalled = Arc::new(Notify::new());
    let stalling = Arc::new(StallsMidBatch {
        inner: MessagesProjection,
        stalled: stalled.clone(),
        armed: AtomicBool::new(true),
    });
    let mut options = t.app.lease_options();
    options.batch_size = 400;
    let crashing = Runner::new(t.app.store.clone(), stalling, options.clone());
    let task = tokio::spawn(crashing.run(std::future::pending()));
    stalled.notified().await;
    // Half the batch is written, uncommitted. Kill the worker: its transaction and lease die.
    task.abort();
    let _ = task.await;

    let pool = t.app.store.pool();
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM messages").fetch_one(pool).await.unwrap();
    assert_eq!(rows, 0, "nothing of the killed batch is visible");
    let status = list(&t.app.store).await.unwrap();
    assert_eq!(status[0].events_applied, 0, "the checkpoint did not move");

    t.settle().await;
    let mut restarted = Runner::new(t.app.store.clone(), Arc::new(MessagesProjection), options.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !restarted.acquire().await.unwrap() {
        assert!(Instant::now() < deadline, "the killed runner's lease was released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drive_until_idle(&mut restarted).await;
    let incremental = dump(pool, "messages").await;
    assert_eq!(incremental.as_array().unwrap().len(), 1500);
    restarted.release().await;

    let rebuilt = rebuild(&t.app.store, Arc::new(MessagesProjection), options, |_| {}).await.unwrap();
    assert_eq!(rebuilt.generation, 2);
    assert_same_rows(
        &dump(pool, "messages").await,
        &incremental,
        "the restarted projection equals a rebuild",
    );
    assert_same_rows(
        &dump(pool, "proj_messages_g1.messages").await,
        &incremental,
        "the retired generation is kept",
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runners_for_one_projection_one_writes_and_a_killed_connection_hands_over() {
    let t = TestApp::new().await;
    let (account, conversation) = (Uuid::now_v7(), Uuid::now_v7());
    let pool = t.app.store.pool().clone();
    let a = Runner::new(t.app.store.clone(), Arc::new(MessagesProjection), t.fast_lease());
    let b = Runner::new(t.app.store.clone(), Arc::new(MessagesProjection), t.fast_lease());
    let holders = [a.holder().to_owned(), b.holder().to_owned()];
    let tasks = [tokio::spawn(a.run(std::future::pending())), tokio::spawn(b.run(std::future::pending()))];

    let holder_now = |pool: sqlx::PgPool| async move {
        let h: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT holder FROM projection_generations WHERE name = 'messages' AND state = 'live'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap();
        h.and_then(|h| h.0)
    };
    let mut writers_seen = std::collections::HashSet::new();
    for _ in 0..5 {
        t.append_messages(account, conversation, 50, 10).await;
        wait_for(&pool, &["messages"], t.head().await, Duration::from_secs(5)).await.unwrap();
        writers_seen.insert(holder_now(pool.clone()).await.unwrap());
    }
    assert_eq!(writers_seen.len(), 1, "only one runner wrote");
    let leader = writers_seen.into_iter().next().unwrap();
    let follower = holders.iter().find(|h| **h != leader).unwrap().clone();
    let (lease_connections,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database() \
           AND a.application_name LIKE 'parley-lease/messages/%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(lease_connections, 1, "one lease is held");

    let killed = Instant::now();
    let (terminated,): (bool,) = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind(format!("parley-lease/messages/{leader}"))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(terminated, "the leader's lease connection was killed");
    // Until it next checks its lease, the old leader may still finish a batch (its writes are
    // fenced by the checkpoint's holder once the follower takes over); the follower must take
    // over within 5 seconds and then project everything written since.
    while holder_now(pool.clone()).await.as_ref() != Some(&follower) {
        assert!(killed.elapsed() < Duration::from_secs(5), "no hand-over within 5 s (leader was {leader})");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.append_messages(account, conversation, 50, 10).await;
    wait_for(&pool, &["messages"], t.head().await, Duration::from_secs(5)).await.unwrap();
    assert_eq!(holder_now(pool.clone()).await, Some(follower), "the follower keeps the lease");
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM messages").fetch_one(&pool).await.unwrap();
    assert_eq!(rows, 300, "every message is projected exactly once");
    for task in tasks {
        task.abort();
    }
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_while_writes_continue_keeps_reads_answering_and_equals_the_incremental_copy() {
    let t = Arc::new(TestApp::new().await);
    let (account, conversation) = (Uuid::now_v7(), Uuid::now_v7());
    t.append_messages(account, conversation, 3000, 100).await;
    let pool = t.app.store.pool().clone();
    let live = Runner::new(t.app.store.clone(), Arc::new(MessagesProjection), t.fast_lease());
    let live = tokio::spawn(live.run(std::future::pending()));
    wait_for(&pool, &["messages"], t.head().await, Duration::from_secs(10)).await.unwrap();

    let building = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn({
        let (t, building) = (t.clone(), building.clone());
        async move {
            let mut written = 0;
            while building.load(Ordering::SeqCst) {
                t.append_messages(account, conversation, 10, 10).await;
                written += 10;
            }
            written
        }
    });
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = tokio::spawn({
        let (pool, building, reads) = (pool.clone(), building.clone(), reads.clone());
        async move {
            while building.load(Ordering::SeqCst) {
                let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM messages WHERE conversation_id = $1")
                    .bind(conversation)
                    .fetch_one(&pool)
                    .await
                    .expect("reads keep answering during the rebuild");
                assert!(n >= 3000);
                reads.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let mut options = t.fast_lease();
    options.batch_size = 200;
    let stop_writes = building.clone();
    let rebuilt = rebuild(&t.app.store, Arc::new(MessagesProjection), options, move |p| {
        if p.phase != "building" {
            stop_writes.store(false, Ordering::SeqCst);
        }
    })
    .await
    .unwrap();
    let written = writer.await.unwrap();
    reader.await.unwrap();
    assert!(written > 0, "writes went on during the rebuild");
    assert!(reads.load(Ordering::SeqCst) > 0);
    assert_eq!(rebuilt.generation, 2);

    wait_for(&pool, &["messages"], t.head().await, Duration::from_secs(10)).await.unwrap();
    let rebuilt_rows = dump(&pool, "messages").await;
    assert_eq!(rebuilt_rows.as_array().unwrap().len(), 3000 + written, "every message, once");
    // The retired generation was projected incrementally from the start until the swap; a
    // write may land between its last batch and the swap, so it may stop a little short. Up to
    // where it stopped, the rebuilt generation must hold exactly the same rows.
    let incremental = dump(&pool, "proj_messages_g1.messages").await;
    let (stopped_at,): (i64,) = sqlx::query_as("SELECT coalesce(max(seq), 0) FROM proj_messages_g1.messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(stopped_at >= 3000);
    let rebuilt_prefix = dump(&pool, &format!("(SELECT * FROM messages WHERE seq <= {stopped_at})")).await;
    assert_same_rows(&rebuilt_prefix, &incremental, "rebuild equals the incremental copy");
    live.abort();
    Arc::into_inner(t).expect("no other owner").finish().await;
}

/// A projection that fails on one particular event until told otherwise.
struct FailsOn {
    bad_body: String,
    healed: AtomicBool,
}

#[async_trait]
impl Projection for FailsOn {
    fn name(&self) -> &'static str {
        "fails_on"
    }
    fn version(&self) -> i32 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &["fails_on_seen"]
    }
    fn schema(&self) -> &'static str {
        "CREATE TABLE fails_on_seen (body text PRIMARY KEY);"
    }
    fn decides(&self) -> Decisions {
        Decisions { handles: &["MessagePosted"], ignores: &[], ignores_streams: &[] }
    }
    async fn apply(&self, conn: &mut PgConnection, events: &[&RecordedEvent]) -> Result<(), ProjectionError> {
        for e in events {
            let body = e.payload["body"].as_str().unwrap_or_default().to_owned();
            if body == self.bad_body && !self.healed.load(Ordering::SeqCst) {
                return Err(ProjectionError::apply(e, "cannot handle this one"));
            }
            sqlx::query("INSERT INTO fails_on_seen (body) VALUES ($1)")
                .bind(body)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_event_stalls_only_its_projection_with_the_error_recorded() {
    let t = TestApp::new().await;
    let (account, conversation) = (Uuid::now_v7(), Uuid::now_v7());
    t.append_messages(account, conversation, 20, 20).await;
    // Runners stop at what is readable: make sure all 20 events are.
    t.settle().await;
    let failing = Arc::new(FailsOn { bad_body: "message 8".into(), healed: AtomicBool::new(false) });
    let mut bad = Runner::new(t.app.store.clone(), failing.clone(), t.app.lease_options());
    let mut good = Runner::new(t.app.store.clone(), Arc::new(MessagesProjection), t.app.lease_options());
    assert!(bad.acquire().await.unwrap() && good.acquire().await.unwrap());

    assert!(bad.step().await.is_err(), "the batch holding the bad event fails");
    for _ in 0..7 {
        assert_eq!(
            bad.step().await.unwrap(),
            StepOutcome::Applied(1),
            "the events before it land one by one"
        );
    }
    let err = bad.step().await.unwrap_err();
    assert!(err.to_string().contains("cannot handle this one"));
    drive_until_idle(&mut good).await;

    let status = list(&t.app.store).await.unwrap();
    let failing_status = status.iter().find(|s| s.name == "fails_on").unwrap();
    assert_eq!(failing_status.status, "failing");
    assert_eq!(failing_status.events_applied, 7);
    assert_eq!(failing_status.lag, 13);
    assert!(failing_status.last_error.as_deref().unwrap().contains("cannot handle this one"));
    assert!(failing_status.last_error_position.is_some(), "the failing event is named");
    let messages = status.iter().find(|s| s.name == "messages").unwrap();
    assert_eq!((messages.status.as_str(), messages.lag), ("running", 0), "other projections go on");

    failing.healed.store(true, Ordering::SeqCst);
    drive_until_idle(&mut bad).await;
    let status = list(&t.app.store).await.unwrap();
    let healed = status.iter().find(|s| s.name == "fails_on").unwrap();
    assert_eq!((healed.status.as_str(), healed.lag, healed.last_error.is_none()), ("running", 0, true));
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_rebuilds_every_projection_while_the_workers_serve_and_nothing_changes() {
    use clap::Parser;
    use parley_api::cli::{run, Cli};
    use parley_api::workers::Workers;

    let t = TestApp::new().await;
    let (owner, _) = t.owner("owner@example.com").await;
    let group = t.app.commands.start_group(&owner, "General", &[]).await.unwrap();
    let id = group.aggregate.id.unwrap();
    for i in 0..20 {
        t.app.commands.post_message(&owner, id, &format!("m{i}")).await.unwrap();
    }
    let workers = Workers::spawn(&t.app).unwrap();
    let pool = t.app.store.pool().clone();
    let all = ["users", "conversations", "messages", "invitations"];
    wait_for(&pool, &all, t.head().await, Duration::from_secs(10)).await.unwrap();
    let tables = ["accounts", "users", "conversations", "conversation_members", "messages", "invitations"];
    let mut before = Vec::new();
    for table in tables {
        before.push(dump(&pool, table).await);
    }

    let cli = |args: &[&str]| {
        let mut argv = vec!["parley".to_owned(), "--database-url".to_owned(), t.db.url()];
        argv.extend(args.iter().map(|a| a.to_string()));
        Cli::try_parse_from(argv).unwrap()
    };
    let code = run(cli(&["projections", "rebuild", "--all", "--yes"])).await.unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    let status = list(&t.app.store).await.unwrap();
    let live: Vec<_> = status.iter().filter(|s| s.generation == 2).map(|s| s.name.as_str()).collect();
    assert_eq!(
        live.len(),
        t.app.projections.all().len(),
        "every projection runs a new generation: {status:?}"
    );
    for (table, old) in tables.iter().zip(&before) {
        assert_same_rows(&dump(&pool, table).await, old, table);
    }
    // Each read model's deferred indexes were built again after its batches.
    for projection in t.app.projections.all() {
        let (old, new) = (schema_name(projection.name(), 1), schema_name(projection.name(), 2));
        assert_eq!(indexes(&pool, &new).await, indexes(&pool, &old).await, "{}", projection.name());
    }
    assert_eq!(run(cli(&["projections", "list"])).await.unwrap(), std::process::ExitCode::SUCCESS);
    workers.shutdown().await;
    t.finish().await;
}

#[tokio::test]
async fn a_read_model_of_an_older_shape_is_rebuilt_before_the_server_serves() {
    let t = TestApp::new().await;
    let (account, conversation) = (Uuid::now_v7(), Uuid::now_v7());
    t.append_messages(account, conversation, 200, 50).await;
    t.settle().await;
    let pool = t.app.store.pool().clone();
    let messages: Arc<dyn Projection> = Arc::new(MessagesProjection);
    parley_projections::ensure_live(&t.app.store, std::slice::from_ref(&messages), t.fast_lease())
        .await
        .unwrap();
    // As an older release left it: version 1, without the read states table.
    let (generation,): (i32,) = sqlx::query_as(
        "UPDATE projection_generations SET version = 1 WHERE name = 'messages' AND state = 'live' RETURNING generation",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let schema = schema_name("messages", generation);
    sqlx::query(&format!("DROP TABLE {schema}.read_states CASCADE")).execute(&pool).await.unwrap();

    parley_projections::ensure_live(&t.app.store, &[messages], t.fast_lease()).await.unwrap();
    let (version, rebuilt): (i32, i32) = sqlx::query_as(
        "SELECT version, generation FROM projection_generations WHERE name = 'messages' AND state = 'live'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(version, MessagesProjection.version());
    assert!(rebuilt > generation, "a new generation serves");
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM messages").fetch_one(&pool).await.unwrap();
    assert_eq!(rows, 200, "rebuilt from the log");
    sqlx::query("SELECT count(*) FROM read_states")
        .execute(&pool)
        .await
        .expect("the new shape's tables exist");
    t.finish().await;
}

/// A projection whose version is chosen by the test: two builds of the same read model.
struct Versioned(i32);

#[async_trait]
impl Projection for Versioned {
    fn name(&self) -> &'static str {
        "versioned"
    }
    fn version(&self) -> i32 {
        self.0
    }
    fn tables(&self) -> &'static [&'static str] {
        &["versioned_seen"]
    }
    fn schema(&self) -> &'static str {
        "CREATE TABLE versioned_seen (body text PRIMARY KEY, applied_by int NOT NULL);"
    }
    fn decides(&self) -> Decisions {
        Decisions { handles: &["MessagePosted"], ignores: &[], ignores_streams: &[] }
    }
    async fn apply(&self, conn: &mut PgConnection, events: &[&RecordedEvent]) -> Result<(), ProjectionError> {
        for e in events {
            sqlx::query("INSERT INTO versioned_seen (body, applied_by) VALUES ($1, $2)")
                .bind(e.payload["body"].as_str().unwrap_or_default())
                .bind(self.0)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

/// The `versioned` projection's generations that are not retired: `(generation, version)`.
async fn versions(t: &TestApp) -> Vec<(i32, i32)> {
    let all = list(&t.app.store).await.unwrap();
    all.into_iter().filter(|s| s.name == "versioned").map(|s| (s.generation, s.version)).collect()
}

#[tokio::test]
async fn a_node_of_the_previous_version_leaves_the_lease_to_the_newer_one() {
    let t = TestApp::new().await;
    let (account, conversation) = (Uuid::now_v7(), Uuid::now_v7());
    t.append_messages(account, conversation, 10, 10).await;
    t.settle().await;
    // Given the previous version live, then the new version's node taking over (a rolling upgrade).
    let mut old = Runner::new(t.app.store.clone(), Arc::new(Versioned(1)), t.app.lease_options());
    assert!(old.acquire().await.unwrap());
    drive_until_idle(&mut old).await;
    old.release().await;
    let mut new = Runner::new(t.app.store.clone(), Arc::new(Versioned(2)), t.app.lease_options());
    assert!(new.acquire().await.unwrap());
    drive_until_idle(&mut new).await;
    let live = versions(&t).await;
    assert_eq!(live, vec![(2, 2)], "the new version serves");

    // When the new node lets go (it stops, or its lease connection breaks), a node still on the
    // previous version does not take the lease: it would apply older code to the newer tables,
    // or build the older version again.
    new.release().await;
    let mut old = Runner::new(t.app.store.clone(), Arc::new(Versioned(1)), t.app.lease_options());
    assert!(!old.acquire().await.unwrap(), "the previous version leaves the lease");
    let after = versions(&t).await;
    assert_eq!(after, live, "no generation of the previous version was made");
    // A node of the new version takes it at once.
    let mut again = Runner::new(t.app.store.clone(), Arc::new(Versioned(2)), t.app.lease_options());
    assert!(again.acquire().await.unwrap());
    again.release().await;
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_holder_of_the_previous_version_hands_the_lease_to_the_newer_one() {
    let t = TestApp::new().await;
    let (account, conversation) = (Uuid::now_v7(), Uuid::now_v7());
    t.append_messages(account, conversation, 10, 10).await;
    // Given a node of the previous version holding the lease and serving,
    let mut old = Runner::new(t.app.store.clone(), Arc::new(Versioned(1)), t.app.lease_options());
    assert!(old.acquire().await.unwrap());
    drive_until_idle(&mut old).await;
    // when the first node of the new version starts (it rebuilds the read model beside the live
    // one, then waits for the holder to hand it over) while posts go on,
    let rebuilding = tokio::spawn({
        let store = t.app.store.clone();
        let options = t.app.lease_options();
        async move { rebuild(&store, Arc::new(Versioned(2)), options, |_| {}).await }
    });
    let ready = Instant::now();
    while !list(&t.app.store)
        .await
        .unwrap()
        .iter()
        .any(|g| g.name == "versioned" && g.version == 2 && g.status == "handing_over")
    {
        assert!(ready.elapsed() < Duration::from_secs(30), "the new version's generation never got ready");
        tokio::task::yield_now().await;
    }
    t.append_messages(account, conversation, 5, 5).await;
    // then the old holder applies what it has to its own generation, and then leaves the lease
    // instead of catching the newer generation up with its older code;
    let mut outcomes = Vec::new();
    loop {
        let outcome = old.step().await.unwrap();
        outcomes.push(outcome);
        if matches!(outcome, StepOutcome::NotLeader) {
            break;
        }
        assert!(outcomes.len() < 100, "the old holder kept the lease: {outcomes:?}");
    }
    assert!(!outcomes.iter().any(|o| matches!(o, StepOutcome::HandedOver(_))), "{outcomes:?}");
    assert!(!old.is_leader());
    // the new version takes the lease, catches its generation up and serves, every row its own.
    let swapped = tokio::time::timeout(Duration::from_secs(30), rebuilding).await.unwrap().unwrap().unwrap();
    assert_eq!(swapped.version, 2);
    assert_eq!(versions(&t).await, vec![(swapped.generation, 2)]);
    let rows: Vec<(i32, i64)> =
        sqlx::query_as("SELECT applied_by, count(*) FROM versioned_seen GROUP BY applied_by")
            .fetch_all(t.app.store.pool())
            .await
            .unwrap();
    assert_eq!(rows, vec![(2, 15)], "every event applied by the new version's code");
    // And the old node, asked again, leaves the lease to the new version.
    assert!(!old.acquire().await.unwrap());
    t.finish().await;
}

/// The indexes of a generation's tables, each as its definition with the schema left out.
async fn indexes(pool: &sqlx::PgPool, schema: &str) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT replace(indexdef, $1 || '.', '') FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().map(|(d,)| d).collect()
}

/// Given a conversation with posts whose bodies hold every character a bulk load must escape,
/// mentions, reactions and read marks, projected incrementally; when the messages read model is
/// rebuilt, then the tables it fills have none of the indexes no batch reads through, each is
/// built once the log is in (an "indexing" phase after the last batch), and the new generation
/// ends with the same rows and the same indexes as the incremental one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_fills_tables_without_the_indexes_it_does_not_read_and_builds_them_at_the_end() {
    use parley_aggregates::conversation::MemberRole;
    let t = TestApp::new().await;
    let (owner, _) = t.owner("owner@example.com").await;
    let conversation = t.app.commands.start_group(&owner, "bulk", &[]).await.unwrap().aggregate.id.unwrap();
    let invitation = t.app.commands.invite(&owner, "bob@example.com", "member").await.unwrap();
    let bob = t
        .app
        .commands
        .register(parley_commands::services::Registration {
            name: "bob".into(),
            email: "bob@example.com".into(),
            password: "correct horse battery".into(),
            invitation_token: Some(invitation.token.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let bob_id = bob.user_id;
    t.app.commands.add_member(&owner, conversation, bob_id, MemberRole::Member).await.unwrap();
    let bob = parley_tests::user_context(&bob);
    let awkward = [
        "tab\there",
        "two\nlines\r\nand a return\r",
        "back\\slash \\N \\. and a lone \\",
        "quotes ' \" , ; | and {braces}",
        "ünïcödé 👍 漢字",
        "\\N",
    ];
    let mut posted = Vec::new();
    for round in 0..40 {
        let body = format!("{} #{round}", awkward[round % awkward.len()]);
        let (author, mentions) = if round % 2 == 0 { (&owner, vec![bob_id]) } else { (&bob, vec![]) };
        let done =
            t.app.commands.post_message_with(author, conversation, &body, mentions, None).await.unwrap();
        posted.push(done.fresh().unwrap());
    }
    let message = |i: usize| match &posted[i].events[0] {
        parley_aggregates::conversation::ConversationEvent::MessagePosted { message_id, .. } => *message_id,
        other => panic!("not a post: {other:?}"),
    };
    t.app.commands.add_reaction(&bob, message(0), "🎉", None).await.unwrap();
    t.app.commands.add_reaction(&owner, message(1), "👍", None).await.unwrap();
    t.app.commands.mark_read(&bob, conversation, message(20), None).await.unwrap();

    t.settle().await;
    let pool = t.app.store.pool();
    let mut options = t.app.lease_options();
    options.batch_size = 15;
    let mut live = Runner::new(t.app.store.clone(), Arc::new(MessagesProjection), options.clone());
    assert!(live.acquire().await.unwrap());
    drive_until_idle(&mut live).await;
    live.release().await;
    let incremental: Vec<_> = dump_messages(pool, "proj_messages_g1").await;
    assert_eq!(incremental[0].as_array().unwrap().len(), 40);

    let phases = Arc::new(std::sync::Mutex::new(Vec::<&'static str>::new()));
    let while_filling = Arc::new(std::sync::Mutex::new(None::<Vec<String>>));
    let rebuilt = rebuild(&t.app.store, Arc::new(MessagesProjection), options, {
        let (phases, while_filling, pool) = (phases.clone(), while_filling.clone(), pool.clone());
        move |p| {
            phases.lock().unwrap().push(p.phase);
            let mut seen = while_filling.lock().unwrap();
            if p.phase == "building" && seen.is_none() {
                let schema = schema_name("messages", p.generation);
                let found = tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(indexes(&pool, &schema))
                });
                *seen = Some(found);
            }
        }
    })
    .await
    .unwrap();

    let filling = while_filling.lock().unwrap().clone().expect("a batch was reported");
    let names: Vec<&str> =
        filling.iter().filter_map(|d| d.split_whitespace().skip_while(|w| *w != "INDEX").nth(1)).collect();
    assert!(names.contains(&"messages_conversation_seq_idx"), "a batch reads through it: {names:?}");
    assert!(names.contains(&"messages_pkey") && names.contains(&"read_states_pkey"), "{names:?}");
    for deferred in ["reactions_message_idx", "read_states_user_idx"] {
        assert!(!names.contains(&deferred), "{deferred} is built after the batches: {names:?}");
    }
    let phases = phases.lock().unwrap().clone();
    let indexing = phases.iter().position(|p| *p == "indexing").expect("an indexing phase");
    assert!(phases[..indexing].iter().all(|p| *p == "building"), "{phases:?}");
    assert!(phases[indexing..].iter().all(|p| *p != "building"), "{phases:?}");

    assert_eq!(rebuilt.generation, 2);
    assert_eq!(indexes(pool, "proj_messages_g2").await, indexes(pool, "proj_messages_g1").await);
    let rebuilt_rows = dump_messages(pool, "proj_messages_g2").await;
    for (table, (new, old)) in
        ["messages", "reactions", "read_states"].iter().zip(rebuilt_rows.iter().zip(&incremental))
    {
        assert_same_rows(new, old, &format!("rebuilt {table} equal the incremental ones"));
    }
    t.finish().await;
}

/// The messages read model's three tables in `schema`, dumped.
async fn dump_messages(pool: &sqlx::PgPool, schema: &str) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for table in ["messages", "reactions", "read_states"] {
        all.push(dump(pool, &format!("{schema}.{table}")).await);
    }
    all
}

/// The generations of `messages` in the catalogue, with their states, and whether each
/// generation's schema exists.
async fn messages_generations(pool: &sqlx::PgPool) -> Vec<(i32, String)> {
    sqlx::query_as(
        "SELECT generation, state FROM projection_generations WHERE name = 'messages' ORDER BY generation",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn schema_exists(pool: &sqlx::PgPool, schema: &str) -> bool {
    let (found,): (bool,) = sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(pool)
        .await
        .unwrap();
    found
}

/// Starts a rebuild of the messages read model that stops forever in its first batch; returns
/// once it got there, with the task to kill.
async fn stalled_rebuild(
    t: &TestApp,
    options: parley_projections::LeaseOptions,
) -> tokio::task::JoinHandle<()> {
    let stalled = Arc::new(Notify::new());
    let stalling = Arc::new(StallsMidBatch {
        inner: MessagesProjection,
        stalled: stalled.clone(),
        armed: AtomicBool::new(true),
    });
    let store = t.app.store.clone();
    let task = tokio::spawn(async move {
        let _ = rebuild(&store, stalling, options, |_| {}).await;
    });
    stalled.notified().await;
    task
}

/// Given a rebuild killed in its first batch, which leaves its generation `building`; when a
/// runner takes the lease while that rebuild still runs, then the generation is left alone; once
/// the rebuild is dead, the next runner to take the lease retires the generation and drops its
/// schema, saying why. And when the next rebuild is killed too, the rebuild after it retires what
/// that one left before building its own (generation numbers are never reused).
#[tokio::test]
async fn a_generation_a_killed_rebuild_left_is_dropped_by_the_next_lease_holder_or_rebuild() {
    let t = TestApp::new().await;
    let (account, conversation) = (Uuid::now_v7(), Uuid::now_v7());
    t.append_messages(account, conversation, 300, 100).await;
    t.settle().await;
    let pool = t.app.store.pool().clone();
    let mut options = t.app.lease_options();
    options.batch_size = 100;
    let mut live = Runner::new(t.app.store.clone(), Arc::new(MessagesProjection), options.clone());
    assert!(live.acquire().await.unwrap());
    drive_until_idle(&mut live).await;
    live.release().await;
    let incremental = dump(&pool, "messages").await;

    let killed = stalled_rebuild(&t, options.clone()).await;
    assert_eq!(messages_generations(&pool).await, [(1, "live".into()), (2, "building".into())]);
    let mut runner = Runner::new(t.app.store.clone(), Arc::new(MessagesProjection), options.clone());
    assert!(runner.acquire().await.unwrap());
    runner.release().await;
    assert_eq!(
        messages_generations(&pool).await,
        [(1, "live".into()), (2, "building".into())],
        "a rebuild that is still running keeps its generation"
    );

    killed.abort();
    let _ = killed.await;
    // The killed rebuild's connection goes away as soon as its server process sees it closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(runner.acquire().await.unwrap());
        runner.release().await;
        if messages_generations(&pool).await == [(1, "live".into()), (2, "retired".into())] {
            break;
        }
        assert!(Instant::now() < deadline, "the lease holder drops what the killed rebuild left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!schema_exists(&pool, "proj_messages_g2").await, "its schema went with it");
    let (why,): (Option<String>,) = sqlx::query_as(
        "SELECT last_error FROM projection_generations WHERE name = 'messages' AND generation = 2",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(why.is_some_and(|w| w.contains("abandoned")));

    let killed = stalled_rebuild(&t, options.clone()).await;
    assert_eq!(messages_generations(&pool).await, [(1, "live".into()), (3, "building".into())]);
    killed.abort();
    let _ = killed.await;
    let rebuilt = rebuild(&t.app.store, Arc::new(MessagesProjection), options, |_| {}).await.unwrap();
    assert_eq!(rebuilt.generation, 4);
    assert_eq!(messages_generations(&pool).await, [(1, "retired".into()), (4, "live".into())]);
    assert!(!schema_exists(&pool, "proj_messages_g3").await);
    assert_same_rows(&dump(&pool, "messages").await, &incremental, "the rebuild equals the incremental copy");
    t.finish().await;
}
