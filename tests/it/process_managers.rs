//! Process managers: a consumer of the log enqueues a job for each event it acts on, in the
//! transaction that moves its checkpoint. Killed mid-batch, it enqueues nothing for that batch;
//! the runner that takes over enqueues each event's job exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parley_commands::jobs::{self, FORGET_SESSION_TOKENS};
use parley_commands::process_managers::EndedSessions;
use parley_eventstore::{Consumer, ConsumerRunner, ConsumerStep, RecordedEvent, StoreError};
use parley_jobs::{Worker, WorkerOptions};
use sqlx::PgConnection;
use tokio::sync::Notify;

use parley_tests::TestApp;

/// The real process manager, made to stop half-way through its first batch, as a node killed
/// mid-batch would.
struct KilledMidBatch {
    inner: EndedSessions,
    stalled: Arc<Notify>,
}

#[async_trait]
impl Consumer for KilledMidBatch {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn wants(&self, event_type: &str) -> bool {
        self.inner.wants(event_type)
    }

    async fn handle(&self, tx: &mut PgConnection, events: &[&RecordedEvent]) -> Result<u64, StoreError> {
        self.inner.handle(tx, &events[..events.len() / 2]).await?;
        self.stalled.notify_one();
        std::future::pending().await
    }
}

async fn jobs_caused(t: &TestApp) -> Vec<(uuid::Uuid, String)> {
    sqlx::query_as("SELECT causation_id, args->>'session_id' FROM jobs WHERE kind = $1 ORDER BY 2")
        .bind(FORGET_SESSION_TOKENS)
        .fetch_all(t.app.store.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_manager_killed_mid_batch_enqueues_each_events_job_exactly_once() {
    let t = TestApp::new().await;
    let (ctx, _) = t.owner("owner@example.com").await;
    let connect = t.app.connect.clone();
    let manager = || Arc::new(EndedSessions { queue: t.app.jobs.clone() });
    // It starts at the head of the log the first time it runs.
    let mut first = ConsumerRunner::new(t.app.store.clone(), manager(), connect.clone());
    assert!(first.acquire().await.unwrap());
    first.release().await;
    let mut sessions = Vec::new();
    for _ in 0..6 {
        let started = t.app.commands.start_session(&ctx).await.unwrap();
        t.app.commands.end_session(&ctx, started.session_id, "logout").await.unwrap();
        sessions.push(started.session_id.to_string());
    }
    t.settle().await;

    // A runner dies half-way through the batch: its transaction, with half the jobs, is gone.
    let stalled = Arc::new(Notify::new());
    let dying =
        KilledMidBatch { inner: EndedSessions { queue: t.app.jobs.clone() }, stalled: stalled.clone() };
    let mut runner = ConsumerRunner::new(t.app.store.clone(), Arc::new(dying), connect.clone());
    let killed = tokio::spawn(async move {
        assert!(runner.acquire().await.unwrap());
        let _ = runner.step().await;
    });
    stalled.notified().await;
    killed.abort();
    assert!(killed.await.unwrap_err().is_cancelled());
    assert!(jobs_caused(&t).await.is_empty(), "nothing of the killed batch was enqueued");

    // Another runner takes over once the dead one's lease is gone, and finishes.
    let mut next = ConsumerRunner::new(t.app.store.clone(), manager(), connect.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !next.acquire().await.unwrap() {
        assert!(Instant::now() < deadline, "the lease was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while let ConsumerStep::Consumed(_) = next.step().await.unwrap() {}
    assert_eq!(next.step().await.unwrap(), ConsumerStep::Idle);
    let caused = jobs_caused(&t).await;
    sessions.sort();
    assert_eq!(
        caused.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>(),
        sessions,
        "one job per ended session"
    );
    let ended: Vec<(uuid::Uuid,)> =
        sqlx::query_as("SELECT event_id FROM events WHERE event_type = 'SessionEnded'")
            .fetch_all(t.app.store.pool())
            .await
            .unwrap();
    let mut causes: Vec<uuid::Uuid> = caused.iter().map(|(c, _)| *c).collect();
    let mut events: Vec<uuid::Uuid> = ended.into_iter().map(|(e,)| e).collect();
    causes.sort();
    events.sort();
    assert_eq!(causes, events, "each job names the event that caused it");

    // And the jobs do their work: the ended sessions' token rows are gone.
    let tokens = || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM session_tokens WHERE session_id::text = ANY($1)")
                .bind(&sessions)
                .fetch_one(t.app.store.pool())
                .await
                .unwrap();
        n
    };
    assert_eq!(tokens().await, 6, "one refresh token row per session");
    let handlers = jobs::handlers(t.app.store.pool().clone(), t.app.jobs.clone());
    let worker = Worker::new(t.app.jobs.clone(), handlers, WorkerOptions::default());
    assert_eq!(worker.drain().await.unwrap(), 6);
    assert_eq!(tokens().await, 0);
    next.release().await;
    t.finish().await;
}

/// A consumer whose version is chosen by the test: two releases of the same process manager.
/// It records which version acted on each message.
struct Versioned(i32);

#[async_trait]
impl Consumer for Versioned {
    fn name(&self) -> &'static str {
        "versioned_consumer"
    }

    fn version(&self) -> i32 {
        self.0
    }

    fn wants(&self, event_type: &str) -> bool {
        event_type == "MessagePosted"
    }

    async fn handle(&self, tx: &mut PgConnection, events: &[&RecordedEvent]) -> Result<u64, StoreError> {
        for event in events {
            sqlx::query("INSERT INTO consumer_seen (event_id, by_version) VALUES ($1, $2)")
                .bind(event.event_id)
                .bind(self.0)
                .execute(&mut *tx)
                .await?;
        }
        Ok(events.len() as u64)
    }
}

#[tokio::test]
async fn a_process_manager_of_the_previous_version_leaves_the_lease_to_the_newer_one() {
    let t = TestApp::new().await;
    sqlx::query("CREATE TABLE consumer_seen (event_id uuid PRIMARY KEY, by_version int NOT NULL)")
        .execute(t.app.store.pool())
        .await
        .unwrap();
    let (account, conversation) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let runner = |version| {
        ConsumerRunner::new(t.app.store.clone(), Arc::new(Versioned(version)), t.app.connect.clone())
    };
    // Given a node of the previous release holding the process manager's lease and acting,
    let mut old = runner(1);
    assert!(old.acquire().await.unwrap());
    t.append_messages(account, conversation, 3, 3).await;
    t.settle().await;
    assert_eq!(old.step().await.unwrap(), ConsumerStep::Consumed(3));
    // when a node of the new release starts (the lease is taken: it waits, and says it is there),
    let mut new = runner(2);
    assert!(!new.acquire().await.unwrap());
    t.append_messages(account, conversation, 3, 3).await;
    t.settle().await;
    // then the old holder acts on nothing more and leaves the lease,
    assert_eq!(old.step().await.unwrap(), ConsumerStep::NotLeader);
    // the new one takes it and acts on what followed, each event once, by the newest code;
    assert!(new.acquire().await.unwrap());
    assert_eq!(new.step().await.unwrap(), ConsumerStep::Consumed(3));
    let seen: Vec<(i32, i64)> =
        sqlx::query_as("SELECT by_version, count(*) FROM consumer_seen GROUP BY 1 ORDER BY 1")
            .fetch_all(t.app.store.pool())
            .await
            .unwrap();
    assert_eq!(seen, vec![(1, 3), (2, 3)]);
    // and when the new node lets go, an old one does not take the lease back.
    new.release().await;
    let mut again = runner(1);
    assert!(!again.acquire().await.unwrap(), "the previous release leaves the lease");
    assert!(runner(2).acquire().await.unwrap());
    t.finish().await;
}
