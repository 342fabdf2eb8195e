//! The job queue on a real PostgreSQL, with a clock moved by hand: retries on the documented
//! schedule, the dead set and a retry from the API, cron ticks enqueued once across nodes.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{Duration, Utc};
use parley_jobs::{
    Clock, Cron, Handler, Handlers, Job, JobQueue, ManualClock, NewJob, Schedule, Worker, WorkerOptions,
};
use reqwest::Method;
use serde_json::json;

use parley_tests::server::TestServer;
use parley_tests::TestApp;

/// Fails until healed, counting its runs.
#[derive(Clone, Default)]
struct Flaky {
    runs: Arc<AtomicUsize>,
    healed: Arc<AtomicBool>,
}

#[async_trait]
impl Handler for Flaky {
    fn kind(&self) -> &'static str {
        "test.flaky"
    }

    async fn run(&self, _job: &Job) -> Result<(), parley_jobs::Failure> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if self.healed.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("the service is down".into())
        }
    }
}

async fn job(queue: &JobQueue, id: uuid::Uuid) -> Job {
    sqlx::query_as("SELECT * FROM jobs WHERE id = $1").bind(id).fetch_one(queue.pool()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_retries_on_schedule_then_joins_the_dead_set_and_runs_again_when_retried() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let clock = ManualClock::at(Utc::now());
    let queue = JobQueue::new(s.t.app.store.pool().clone(), Arc::new(clock.clone()));
    let flaky = Flaky::default();
    let worker =
        Worker::new(queue.clone(), Handlers::default().with(flaky.clone()), WorkerOptions::default());
    let account = owner.account_id.parse().unwrap();
    let id = queue
        .enqueue_now(&NewJob::new("test.flaky", json!({})).account(account).max_attempts(3))
        .await
        .unwrap()
        .unwrap();

    // Three attempts: after the first failure 15..=44 s (count 0), after the second 16..=74 s
    // (count 1: 1 + 15 + rand(30)·2), then the dead set.
    let mut waits = Vec::new();
    for attempt in 1..=3 {
        assert_eq!(worker.drain().await.unwrap(), 1, "attempt {attempt} runs when due");
        let j = job(&queue, id).await;
        assert_eq!(j.attempt, attempt);
        if attempt < 3 {
            assert_eq!(j.state, "retryable");
            let wait = (j.run_at - clock.now()).num_seconds();
            waits.push(wait);
            clock.advance(Duration::seconds(wait - 1));
            assert_eq!(worker.drain().await.unwrap(), 0, "not a second early");
            clock.advance(Duration::seconds(1));
        }
    }
    assert!((15..=44).contains(&waits[0]), "{waits:?}");
    assert!((16..=74).contains(&waits[1]), "{waits:?}");
    let dead = job(&queue, id).await;
    assert_eq!(dead.state, "discarded");
    assert_eq!(dead.errors.as_array().unwrap().len(), 3);
    clock.advance(Duration::days(30));
    assert_eq!(worker.drain().await.unwrap(), 0, "the dead stay dead");

    // The dead set through the API, and a retry from it.
    let listed = s.get("/api/v1/admin/jobs?state=discarded", &owner.token).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    assert_eq!(listed.data()[0]["id"], json!(id));
    assert_eq!(listed.data()[0]["errors"][2]["error"], "the service is down");
    let events = s.events().await;
    let retried =
        s.call(Method::POST, &format!("/api/v1/admin/jobs/{id}/retry"), Some(&owner.token), None, &[]).await;
    assert_eq!(retried.status, 200, "{:?}", retried.body);
    assert_eq!(retried.data()["state"], "available");
    let again =
        s.call(Method::POST, &format!("/api/v1/admin/jobs/{id}/retry"), Some(&owner.token), None, &[]).await;
    again.assert_error(409, "conflict");
    flaky.healed.store(true, Ordering::SeqCst);
    assert_eq!(worker.drain().await.unwrap(), 1);
    assert_eq!(job(&queue, id).await.state, "completed");
    assert_eq!(flaky.runs.load(Ordering::SeqCst), 4);
    assert_eq!(s.events().await, events, "job operations append nothing to the log");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_job_requests_are_refused() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let member = s.invite_member(&owner, "member@example.com").await;
    let other = s.register("other@example.com").await;
    let theirs =
        s.t.app
            .jobs
            .enqueue_now(&NewJob::new("test.flaky", json!({})).account(other.account_id.parse().unwrap()))
            .await
            .unwrap()
            .unwrap();
    s.get("/api/v1/admin/jobs?state=dead", &owner.token).await.assert_error(400, "bad_request");
    s.get("/api/v1/admin/jobs?queue=urgent", &owner.token).await.assert_error(400, "bad_request");
    s.get("/api/v1/admin/jobs", &member.token).await.assert_error(403, "forbidden");
    let retry = format!("/api/v1/admin/jobs/{theirs}/retry");
    s.call(Method::POST, &retry, Some(&owner.token), None, &[]).await.assert_error(404, "not_found");
    let discard = format!("/api/v1/admin/jobs/{theirs}");
    s.call(Method::DELETE, &discard, Some(&owner.token), None, &[]).await.assert_error(404, "not_found");
    // Their own: an available job cannot be retried; cancelled, it cannot be cancelled again.
    let mine =
        s.t.app
            .jobs
            .enqueue_now(&NewJob::new("test.flaky", json!({})).account(owner.account_id.parse().unwrap()))
            .await
            .unwrap()
            .unwrap();
    let retry = format!("/api/v1/admin/jobs/{mine}/retry");
    s.call(Method::POST, &retry, Some(&owner.token), None, &[]).await.assert_error(409, "conflict");
    let discard = format!("/api/v1/admin/jobs/{mine}");
    assert_eq!(s.call(Method::DELETE, &discard, Some(&owner.token), None, &[]).await.status, 204);
    s.call(Method::DELETE, &discard, Some(&owner.token), None, &[]).await.assert_error(409, "conflict");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_with_one_schedule_enqueue_each_tick_once_and_catch_up_once() {
    let t = TestApp::new().await;
    let clock = ManualClock::at(Utc::now());
    let schedule =
        || vec![Schedule::new("test.every-10s", "*/10 * * * * *", NewJob::new("test.tick", json!({})))];
    let node =
        || Cron::new(JobQueue::new(t.app.store.pool().clone(), Arc::new(clock.clone())), schedule()).unwrap();
    let (a, b) = (node(), node());
    assert_eq!(a.tick().await.unwrap() + b.tick().await.unwrap(), 0, "first sight counts from now");
    let mut enqueued = 0;
    for _ in 0..10 {
        clock.advance(Duration::seconds(10));
        let (x, y) = tokio::join!(a.tick(), b.tick());
        enqueued += x.unwrap() + y.unwrap();
    }
    let count = || async {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM jobs WHERE kind = 'test.tick'")
            .fetch_one(t.app.store.pool())
            .await
            .unwrap();
        n
    };
    assert_eq!((enqueued, count().await), (10, 10), "ten ticks, ten jobs");
    // Every node down over three ticks: one catch-up run when one comes back.
    clock.advance(Duration::seconds(30));
    let (x, y) = tokio::join!(a.tick(), b.tick());
    assert_eq!(x.unwrap() + y.unwrap(), 1);
    assert_eq!(count().await, 11);
    // A schedule that does not parse is named.
    let bad = Cron::new(
        t.app.jobs.clone(),
        vec![Schedule::new("nightly", "61 * * *", NewJob::new("x", json!({})))],
    );
    let error = bad.err().expect("refused").to_string();
    assert!(error.contains("nightly") && error.contains("61 * * *"), "{error}");
    t.finish().await;
}

/// Completes jobs and counts them.
#[derive(Clone, Default)]
struct Counted {
    done: Arc<AtomicUsize>,
}

#[async_trait]
impl Handler for Counted {
    fn kind(&self) -> &'static str {
        "test.counted"
    }

    async fn run(&self, _job: &Job) -> Result<(), parley_jobs::Failure> {
        self.done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_jobs_through_the_queue_with_pruning_leave_it_small() {
    let t = TestApp::with_pool(12).await;
    let pool = t.app.store.pool().clone();
    let clock = ManualClock::at(Utc::now());
    let queue = JobQueue::new(pool.clone(), Arc::new(clock.clone()));
    let counted = Counted::default();
    let options = WorkerOptions { concurrency: 64, ..WorkerOptions::default() };
    let worker = Worker::new(queue.clone(), Handlers::default().with(counted.clone()), options);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let size = || async {
        let (bytes,): (i64,) =
            sqlx::query_as("SELECT pg_total_relation_size('jobs')").fetch_one(&pool).await.unwrap();
        bytes
    };
    let retention = parley_jobs::Retention::default();
    let mut peak = 0;
    for batch in 1..=10 {
        sqlx::query(
            "INSERT INTO jobs (id, account_id, kind, queue, state, max_attempts, run_at, inserted_at) \
             SELECT gen_random_uuid(), '00000000-0000-0000-0000-000000000000', 'test.counted', 'default', \
                    'available', 25, $1, $1 FROM generate_series(1, 10000)",
        )
        .bind(clock.now())
        .execute(&pool)
        .await
        .unwrap();
        queue.wake().await;
        // Every job ran, and its completion is written (completions are written in batches).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let (unfinished,): (i64,) =
                sqlx::query_as("SELECT count(*) FROM jobs WHERE state <> 'completed'")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            if unfinished == 0 && counted.done.load(Ordering::SeqCst) >= batch * 10_000 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the batch was not worked off in time");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // A day later, as the platform's prune job does every minute.
        clock.advance(Duration::days(1) + Duration::seconds(1));
        let pruned = queue.prune(&retention).await.unwrap();
        assert_eq!(pruned.completed, 10_000);
        sqlx::query("VACUUM jobs").execute(&pool).await.unwrap();
        peak = peak.max(size().await);
    }
    let _ = stop.send(());
    running.await.unwrap();
    let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM jobs").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 0);
    // 10,000 rows at a time at most: the table never grows past a batch's worth (a few MiB),
    // where 100,000 kept rows and their indexes would take tens of MiB.
    assert!(peak < 8 * 1024 * 1024, "peak size {peak} bytes");
    t.finish().await;
}

/// Sleeps as long as its job says, counting starts and finishes.
#[derive(Clone, Default)]
struct Slow {
    started: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
}

#[async_trait]
impl Handler for Slow {
    fn kind(&self) -> &'static str {
        "test.slow"
    }

    async fn run(&self, job: &Job) -> Result<(), parley_jobs::Failure> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let ms = job.args["ms"].as_u64().unwrap_or(0);
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_jobs_are_enqueued_once_per_period_and_cancelled_ones_never_run() {
    let t = TestApp::new().await;
    let clock = ManualClock::at(Utc::now());
    let queue = JobQueue::new(t.app.store.pool().clone(), Arc::new(clock.clone()));
    let period = std::time::Duration::from_secs(3600);
    let job = || NewJob::new("test.slow", json!({"ms": 0})).unique("digest:acme", period);
    let first = queue.enqueue_now(&job()).await.unwrap();
    assert!(first.is_some());
    assert_eq!(queue.enqueue_now(&job()).await.unwrap(), None, "the same key in the same period");
    let slow = Slow::default();
    let worker = Worker::new(queue.clone(), Handlers::default().with(slow.clone()), WorkerOptions::default());
    assert_eq!(worker.drain().await.unwrap(), 1);
    assert_eq!(queue.enqueue_now(&job()).await.unwrap(), None, "done, but still the same period");
    clock.advance(Duration::hours(1));
    let next = queue.enqueue_now(&job()).await.unwrap().expect("the next period takes a new one");
    queue.cancel(None, next).await.unwrap();
    assert_eq!(worker.drain().await.unwrap(), 0, "a cancelled job never runs");
    assert!(matches!(queue.cancel(None, next).await, Err(parley_jobs::JobError::Conflict(_))));
    assert_eq!(slow.started.load(Ordering::SeqCst), 1);
    // A cancelled one frees its key; retrying a dead one while its key is taken again is refused.
    let again = queue.enqueue_now(&job()).await.unwrap().expect("a cancelled job frees the key");
    sqlx::query("UPDATE jobs SET state = 'discarded' WHERE id = $1")
        .bind(again)
        .execute(queue.pool())
        .await
        .unwrap();
    let taken = queue.enqueue_now(&job()).await.unwrap().expect("a dead job frees the key");
    assert!(matches!(queue.retry(None, again).await, Err(parley_jobs::JobError::Conflict(_))), "{taken}");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_lets_short_jobs_finish_and_hands_long_ones_back() {
    let t = TestApp::new().await;
    let queue = t.app.jobs.clone();
    let short = queue.enqueue_now(&NewJob::new("test.slow", json!({"ms": 200}))).await.unwrap().unwrap();
    let long = queue.enqueue_now(&NewJob::new("test.slow", json!({"ms": 60_000}))).await.unwrap().unwrap();
    let slow = Slow::default();
    let options = WorkerOptions { grace: std::time::Duration::from_secs(2), ..WorkerOptions::default() };
    let worker = Worker::new(queue.clone(), Handlers::default().with(slow.clone()), options);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while slow.started.load(Ordering::SeqCst) < 2 {
        assert!(std::time::Instant::now() < deadline, "both jobs start");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let _ = stop.send(());
    running.await.unwrap();
    let short = job(&queue, short).await;
    let long = job(&queue, long).await;
    assert_eq!(short.state, "completed", "finished within the grace period");
    assert_eq!((long.state.as_str(), long.attempt), ("available", 0), "handed back as if never tried");
    assert!(long.leased_by.is_none());
    t.finish().await;
}
