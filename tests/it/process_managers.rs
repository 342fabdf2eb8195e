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
