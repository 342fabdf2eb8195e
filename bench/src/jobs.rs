//! The job queue: no-op jobs enqueued and completed per second next to raw single-row INSERT
//! transactions/s in the same run; pickup latency (from the enqueuing commit to the handler's
//! start) at a steady 500 jobs/s; claim latency and the table's size after many jobs have passed
//! through with pruning on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parley_eventstore::db;
use parley_jobs::{Handler, Handlers, Job, JobQueue, NewJob, Retention, SystemClock, Worker, WorkerOptions};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use uuid::Uuid;

use crate::http::percentile;
use crate::store::{measure, raw_inserts};
use crate::Scratch;

const CLIENTS: usize = 16;

/// Counts completions, and notes when each job's handler started.
#[derive(Clone, Default)]
struct Probe {
    done: Arc<AtomicU64>,
    started: Arc<Mutex<HashMap<Uuid, Started>>>,
}

type Wall = chrono::DateTime<chrono::Utc>;

/// When a job's handler started (monotonic, then wall clock), and when the claim that took it
/// began (wall clock).
#[derive(Clone, Copy)]
struct Started {
    at: Instant,
    at_wall: Wall,
    claimed: Wall,
}

#[async_trait]
impl Handler for Probe {
    fn kind(&self) -> &'static str {
        "bench.noop"
    }

    async fn run(&self, job: &Job) -> Result<(), parley_jobs::Failure> {
        if let Ok(mut started) = self.started.lock() {
            let claimed = job.attempted_at.unwrap_or_default();
            started.insert(job.id, Started { at: Instant::now(), at_wall: chrono::Utc::now(), claimed });
        }
        self.done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn worker(queue: &JobQueue, probe: &Probe) -> Worker {
    let options = WorkerOptions { concurrency: 32, ..WorkerOptions::default() };
    Worker::new(queue.clone(), Handlers::default().with(probe.clone()), options)
}

/// Runs `worker` until the returned sender is dropped or sent to.
fn start(worker: Worker) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

pub async fn run(server: &PgConnectOptions, seconds: u64, jobs: usize) -> anyhow::Result<()> {
    let scratch = Scratch::new(server, "jobs").await?;
    let pool = db::pool(scratch.options.clone(), CLIENTS as u32 + 8).await?;
    println!();
    println!("jobs: no-op jobs through one worker (32 at once), {CLIENTS} enqueuing clients, {seconds} s");

    // Throughput: enqueue from 16 clients (one transaction each, as a command would) while one
    // worker completes them; next to raw inserts, measured just before.
    let raw = raw_inserts(pool.clone(), CLIENTS, seconds).await?;
    let queue = JobQueue::new(pool.clone(), Arc::new(SystemClock));
    let probe = Probe::default();
    let (stop, task) = start(worker(&queue, &probe));
    let enqueuing = queue.clone();
    let started = Instant::now();
    let enqueued = measure(CLIENTS, seconds, move |_, _| {
        let queue = enqueuing.clone();
        async move {
            queue.enqueue_now(&NewJob::new("bench.noop", json!({}))).await?;
            Ok(())
        }
    })
    .await?;
    let total = (enqueued * started.elapsed().as_secs_f64()) as u64;
    while probe.done.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let completed = probe.done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(());
    task.await?;
    println!("  raw single-row INSERT transactions/s ({CLIENTS} clients)   {raw:>8.0}");
    println!("  jobs enqueued and completed/s                      {completed:>8.0}");
    println!(
        "  ratio                                              {:>8.2}  (target >= 0.5)",
        completed / raw
    );

    // Pickup latency at a steady 500 jobs/s, on the table as the platform's prune job leaves it
    // (finished jobs deleted, their space vacuumed).
    let retention = Retention { completed: chrono::Duration::zero(), ..Retention::default() };
    queue.prune(&retention).await?;
    sqlx::query("VACUUM ANALYZE jobs").execute(&pool).await?;
    let probe = Probe::default();
    let (stop, task) = start(worker(&queue, &probe));
    let rate = 500u64;
    let n = rate * seconds;
    let committed: Arc<Mutex<HashMap<Uuid, (Instant, Wall)>>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    for _ in 0..n {
        tick.tick().await;
        let (queue, committed) = (queue.clone(), committed.clone());
        tokio::spawn(async move {
            let mut tx = queue.pool().begin().await?;
            let id = queue.enqueue(&mut tx, &NewJob::new("bench.noop", json!({}))).await?;
            tx.commit().await?;
            let at = (Instant::now(), chrono::Utc::now());
            queue.wake().await;
            if let (Some(id), Ok(mut committed)) = (id, committed.lock()) {
                committed.insert(id, at);
            }
            anyhow::Ok(())
        });
    }
    while probe.done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    task.await?;
    // From the commit's return to the handler's start (a handler that started before the
    // enqueuer saw its commit return counts as no wait).
    let started = probe.started.lock().map(|s| s.clone()).unwrap_or_default();
    let committed = committed.lock().map(|c| c.clone()).unwrap_or_default();
    let (mut pickups, mut to_claim, mut to_handler) = (Vec::new(), Vec::new(), Vec::new());
    for (id, (at, at_wall)) in &committed {
        let Some(start) = started.get(id) else { continue };
        pickups.push(start.at.saturating_duration_since(*at));
        to_claim.push((start.claimed - *at_wall).to_std().unwrap_or_default());
        to_handler.push((start.at_wall - start.claimed.max(*at_wall)).to_std().unwrap_or_default());
    }
    for figures in [&mut pickups, &mut to_claim, &mut to_handler] {
        figures.sort();
    }
    println!(
        "  pickup at {rate} jobs/s, commit to handler start: p50 {:.1} ms, p99 {:.1} ms  (target p99 < 20 ms)",
        percentile(&pickups, 0.5),
        percentile(&pickups, 0.99)
    );
    println!(
        "    of which commit to the claim's start p50 {:.1} ms, p99 {:.1} ms; claim's start to handler p50 {:.1} ms, p99 {:.1} ms",
        percentile(&to_claim, 0.5),
        percentile(&to_claim, 0.99),
        percentile(&to_handler, 0.5),
        percentile(&to_handler, 0.99)
    );

    through_many(&pool, &queue, jobs).await?;
    pool.close().await;
    scratch.drop_db().await
}

/// `total` jobs through the queue in batches with pruning after each (completed jobs kept for no
/// time, as if a day had passed): claim latency at the end, the table's size throughout.
async fn through_many(pool: &PgPool, queue: &JobQueue, total: usize) -> anyhow::Result<()> {
    let probe = Probe::default();
    let (stop, task) = start(worker(queue, &probe));
    let retention = Retention { completed: chrono::Duration::zero(), ..Retention::default() };
    let batch = 10_000usize;
    let mut sent = 0usize;
    let mut peak = 0i64;
    let started = Instant::now();
    while sent < total {
        let n = batch.min(total - sent);
        sqlx::query(
            "INSERT INTO jobs (id, account_id, kind, queue, state, max_attempts, run_at, inserted_at) \
             SELECT gen_random_uuid(), '00000000-0000-0000-0000-000000000000', 'bench.noop', 'default', \
                    'available', 25, now(), now() FROM generate_series(1, $1)",
        )
        .bind(n as i64)
        .execute(pool)
        .await?;
        queue.wake().await;
        sent += n;
        while (probe.done.load(Ordering::Relaxed) as usize) < sent {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        queue.prune(&retention).await?;
        sqlx::query("VACUUM jobs").execute(pool).await?;
        let (size,): (i64,) = sqlx::query_as("SELECT pg_total_relation_size('jobs')").fetch_one(pool).await?;
        peak = peak.max(size);
    }
    let _ = stop.send(());
    task.await?;
    let rate = total as f64 / started.elapsed().as_secs_f64();
    // Claim latency on the pruned table: one ready job claimed, 200 times.
    let mut claims = Vec::new();
    for _ in 0..200 {
        queue.enqueue_now(&NewJob::new("bench.noop", json!({}))).await?;
        let t = Instant::now();
        let claimed = queue.claim("default", &["bench.noop"], 1, "bench", Duration::from_secs(15)).await?;
        claims.push(t.elapsed());
        for job in claimed {
            queue.complete(job.id, "bench").await?;
        }
    }
    claims.sort();
    let (size,): (i64,) = sqlx::query_as("SELECT pg_total_relation_size('jobs')").fetch_one(pool).await?;
    println!(
        "  {total} jobs through the queue ({rate:.0}/s) with pruning: table and indexes {:.1} MiB at the end, {:.1} MiB at the peak",
        size as f64 / 1048576.0,
        peak as f64 / 1048576.0
    );
    println!(
        "  claim latency after them: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&claims, 0.5),
        percentile(&claims, 0.99)
    );
    Ok(())
}
