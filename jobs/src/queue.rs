//! The `jobs` table and every statement on it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::clock::Clock;
use crate::job::{Job, JobState, NewJob};

// The statements that find jobs by state or id are not kept as prepared statements: a plan
// cached while the table was nearly empty (a new database, or just after pruning) would be
// kept as the table grew, and PostgreSQL replans only when statistics change, which may be
// never where autovacuum is off. Planned afresh, each sees the table as it is.

/// Workers `LISTEN` here; enqueuers `NOTIFY` it after their commit (never inside it, where the
/// notification queue's lock would serialise every commit).
pub const NOTIFY_CHANNEL: &str = "parley_jobs";

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no such job")]
    NotFound,
    /// The job is not in a state that allows this.
    #[error("the job is {0}")]
    Conflict(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The queue: the pool, the clock, and the wake-ups of this process's workers and of others'.
#[derive(Clone)]
pub struct JobQueue {
    pool: PgPool,
    clock: Arc<dyn Clock>,
    /// Counts this process's wake-ups: a worker that notes the count before it claims sees at
    /// once that jobs came while its claim ran (a wake-up is never lost between the claim and
    /// the wait).
    woken: Arc<tokio::sync::watch::Sender<u64>>,
    /// Asks the notifier task for one `NOTIFY` (coalesced: many enqueues, one notification).
    notify_others: Arc<Notify>,
}

impl JobQueue {
    /// Must be called inside a tokio runtime: it starts the coalescing notifier task.
    pub fn new(pool: PgPool, clock: Arc<dyn Clock>) -> Self {
        let notify_others = Arc::new(Notify::new());
        tokio::spawn(notifier(pool.clone(), notify_others.clone()));
        Self { pool, clock, woken: Arc::new(tokio::sync::watch::Sender::new(0)), notify_others }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Enqueues `job` in the caller's transaction: it exists exactly when that transaction
    /// commits. `None` when a unique job with its key is already there. Call [`JobQueue::wake`]
    /// after the commit.
    pub async fn enqueue(&self, conn: &mut PgConnection, job: &NewJob) -> Result<Option<Uuid>, sqlx::Error> {
        enqueue_at(conn, job, self.clock.now()).await
    }

    /// Enqueues every one of `jobs` in the caller's transaction, in one statement; returns how
    /// many were new (a unique job already there is skipped).
    pub async fn enqueue_many(&self, conn: &mut PgConnection, jobs: &[NewJob]) -> Result<u64, sqlx::Error> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let now = self.clock.now();
        let mut columns = ManyJobs::default();
        for job in jobs {
            let run_at = job.run_at.unwrap_or(now).max(now);
            let state = if run_at > now { JobState::Scheduled } else { JobState::Available };
            columns.ids.push(Uuid::now_v7());
            columns.accounts.push(job.account_id);
            columns.kinds.push(job.kind.clone());
            columns.queues.push(job.queue.as_str().to_owned());
            columns.priorities.push(job.priority);
            columns.states.push(state.as_str().to_owned());
            columns.max_attempts.push(job.max_attempts);
            columns.run_ats.push(run_at);
            columns.args.push(job.args.clone());
            columns.unique_keys.push(job.unique_key(now));
            columns.correlations.push(job.correlation_id);
            columns.causations.push(job.causation_id);
        }
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, account_id, kind, queue, priority, state, max_attempts, run_at, args, unique_key, \
                               correlation_id, causation_id, inserted_at) \
             SELECT *, $13 FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::smallint[], $6::text[], \
                                       $7::int[], $8::timestamptz[], $9::jsonb[], $10::text[], $11::uuid[], $12::uuid[]) \
             ON CONFLICT (kind, unique_key) WHERE unique_key IS NOT NULL \
               AND state NOT IN ('discarded', 'cancelled') DO NOTHING",
        )
        .bind(&columns.ids)
        .bind(&columns.accounts)
        .bind(&columns.kinds)
        .bind(&columns.queues)
        .bind(&columns.priorities)
        .bind(&columns.states)
        .bind(&columns.max_attempts)
        .bind(&columns.run_ats)
        .bind(&columns.args)
        .bind(&columns.unique_keys)
        .bind(&columns.correlations)
        .bind(&columns.causations)
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        metrics::counter!("parley_jobs_enqueued_total", "queue" => "many").increment(inserted);
        Ok(inserted)
    }

    /// Enqueues `job` in a transaction of its own, and wakes the workers.
    pub async fn enqueue_now(&self, job: &NewJob) -> Result<Option<Uuid>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let id = self.enqueue(&mut conn, job).await?;
        drop(conn);
        self.wake().await;
        Ok(id)
    }

    /// Tells the workers, here at once and on every node through one coalesced `NOTIFY`, that
    /// jobs were enqueued (call it after the enqueuing commit).
    pub async fn wake(&self) {
        self.woken.send_modify(|count| *count = count.wrapping_add(1));
        self.notify_others.notify_one();
    }

    /// This process's wake-ups: `changed()` completes when one came since the count was last
    /// marked seen.
    pub(crate) fn wake_ups(&self) -> tokio::sync::watch::Receiver<u64> {
        self.woken.subscribe()
    }

    /// Claims up to `limit` ready jobs of `queue` and of the `kinds` `node` can run, under a lease
    /// of `lease`. A node never takes a job it has no handler for (a node of an older release,
    /// during a rolling deploy, leaves new kinds to the others).
    pub async fn claim(
        &self,
        queue: &str,
        kinds: &[&str],
        limit: i64,
        node: &str,
        lease: Duration,
    ) -> Result<Vec<Job>, sqlx::Error> {
        self.claim_from(&[queue], kinds, limit, node, lease).await
    }

    /// [`JobQueue::claim`] from several queues in one statement: the first queue's ready jobs
    /// first, then the next queue's, and so on (each queue read down its own index, at most
    /// `limit` rows from each).
    pub async fn claim_from(
        &self,
        queues: &[&str],
        kinds: &[&str],
        limit: i64,
        node: &str,
        lease: Duration,
    ) -> Result<Vec<Job>, sqlx::Error> {
        let now = self.clock.now();
        // The rows to take are chosen once (a materialized CTE) and updated through the primary
        // key: the statement stays linear in what it takes whatever plan it gets. As a joined
        // subquery, a plan made while the table was empty re-ran the locking scan for every row
        // of the table (seconds per claim once thousands of jobs had passed).
        let jobs: Vec<Job> = sqlx::query_as(
            "WITH next AS MATERIALIZED ( \
                SELECT ready.id FROM unnest($1::text[]) WITH ORDINALITY AS o(queue, rank) \
                CROSS JOIN LATERAL (SELECT id, priority, run_at FROM jobs \
                     WHERE queue = o.queue AND state IN ('available', 'scheduled', 'retryable') \
                       AND run_at <= $3 AND kind = ANY($6) \
                     ORDER BY priority, run_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) ready \
                ORDER BY o.rank, ready.priority, ready.run_at, ready.id LIMIT $2) \
             UPDATE jobs j SET state = 'running', attempt = j.attempt + 1, attempted_at = $3, leased_by = $4, \
                    lease_expires_at = $3 + make_interval(secs => $5) \
             WHERE j.id = ANY(ARRAY(SELECT id FROM next)) RETURNING j.*",
        )
        .bind(queues)
        .bind(limit)
        .bind(now)
        .bind(node)
        .bind(lease.as_secs_f64())
        .bind(kinds)
        .persistent(false)
        .fetch_all(&self.pool)
        .await?;
        for job in &jobs {
            let waited = (now - job.run_at.max(job.inserted_at)).to_std().unwrap_or_default();
            metrics::histogram!("parley_job_pickup_seconds", "queue" => job.queue.clone())
                .record(waited.as_secs_f64());
        }
        Ok(jobs)
    }

    /// Marks a job `node` runs as completed. `false` when the lease was lost meanwhile (another
    /// node may have run it again: handlers are idempotent).
    pub async fn complete(&self, id: Uuid, node: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'completed', completed_at = $3, leased_by = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND state = 'running' AND leased_by = $2",
        )
        .bind(id)
        .bind(node)
        .bind(self.clock.now())
        .persistent(false)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks several jobs `node` ran as completed in one statement; returns how many were still
    /// its own (a job whose lease was lost meanwhile may have run again elsewhere).
    pub async fn complete_many(&self, ids: &[Uuid], node: &str) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'completed', completed_at = $3, leased_by = NULL, lease_expires_at = NULL \
             WHERE id = ANY($1) AND state = 'running' AND leased_by = $2",
        )
        .bind(ids)
        .bind(node)
        .bind(self.clock.now())
        .persistent(false)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Records a failed attempt: the job runs again `retry_in` from now, or, after its last
    /// attempt, joins the dead set. Returns the state it is left in.
    pub async fn fail(
        &self,
        job: &Job,
        node: &str,
        error: &str,
        retry_in: Duration,
    ) -> Result<Option<JobState>, sqlx::Error> {
        let now = self.clock.now();
        let (state, run_at) = if job.attempt >= job.max_attempts {
            (JobState::Discarded, now)
        } else {
            let retry_in = chrono::Duration::from_std(retry_in).unwrap_or(chrono::Duration::MAX);
            (JobState::Retryable, now.checked_add_signed(retry_in).unwrap_or(now))
        };
        let entry = json!([{"attempt": job.attempt, "at": now, "error": error}]);
        let failed = sqlx::query(
            "UPDATE jobs SET state = $3, run_at = $4, errors = errors || $5, leased_by = NULL, lease_expires_at = NULL, \
                    completed_at = CASE WHEN $3 = 'discarded' THEN $6 END \
             WHERE id = $1 AND state = 'running' AND leased_by = $2",
        )
        .bind(job.id)
        .bind(node)
        .bind(state.as_str())
        .bind(run_at)
        .bind(entry)
        .bind(now)
        .persistent(false)
        .execute(&self.pool)
        .await?;
        Ok((failed.rows_affected() == 1).then_some(state))
    }

    /// Renews the leases of every job `node` runs.
    pub async fn heartbeat(&self, node: &str, lease: Duration) -> Result<u64, sqlx::Error> {
        let renewed = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $2 + make_interval(secs => $3) \
             WHERE state = 'running' AND leased_by = $1",
        )
        .bind(node)
        .bind(self.clock.now())
        .bind(lease.as_secs_f64())
        .persistent(false)
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected())
    }

    /// Makes the jobs whose lease expired (their node died) ready again, or dead if that was
    /// their last attempt. Returns how many.
    pub async fn rescue(&self) -> Result<u64, sqlx::Error> {
        let now = self.clock.now();
        let rescued = sqlx::query(
            "UPDATE jobs SET \
                state = CASE WHEN attempt >= max_attempts THEN 'discarded' ELSE 'available' END, \
                completed_at = CASE WHEN attempt >= max_attempts THEN $1 END, \
                run_at = $1, leased_by = NULL, lease_expires_at = NULL, \
                errors = errors || jsonb_build_array(jsonb_build_object( \
                    'attempt', attempt, 'at', $1, 'error', 'its node stopped while running it (lease expired)')) \
             WHERE state = 'running' AND lease_expires_at < $1",
        )
        .bind(now)
        .persistent(false)
        .execute(&self.pool)
        .await?;
        if rescued.rows_affected() > 0 {
            metrics::counter!("parley_jobs_rescued_total").increment(rescued.rows_affected());
            tracing::warn!(jobs = rescued.rows_affected(), "rescued jobs whose node stopped");
        }
        Ok(rescued.rows_affected())
    }

    /// Gives jobs `node` still runs back to the queue as if never attempted (graceful shutdown).
    pub async fn hand_back(&self, node: &str, ids: &[Uuid]) -> Result<u64, sqlx::Error> {
        let handed = sqlx::query(
            "UPDATE jobs SET state = 'available', attempt = greatest(attempt - 1, 0), run_at = $3, \
                    leased_by = NULL, lease_expires_at = NULL \
             WHERE id = ANY($2) AND state = 'running' AND leased_by = $1",
        )
        .bind(node)
        .bind(ids)
        .bind(self.clock.now())
        .persistent(false)
        .execute(&self.pool)
        .await?;
        Ok(handed.rows_affected())
    }
}

/// The columns of a batch of new jobs, for `unnest`.
#[derive(Default)]
struct ManyJobs {
    ids: Vec<Uuid>,
    accounts: Vec<Uuid>,
    kinds: Vec<String>,
    queues: Vec<String>,
    priorities: Vec<i16>,
    states: Vec<String>,
    max_attempts: Vec<i32>,
    run_ats: Vec<DateTime<Utc>>,
    args: Vec<serde_json::Value>,
    unique_keys: Vec<Option<String>>,
    correlations: Vec<Option<Uuid>>,
    causations: Vec<Option<Uuid>>,
}

/// Sends one `NOTIFY` for however many wake-ups came since the last one, until the pool closes.
async fn notifier(pool: PgPool, wanted: Arc<Notify>) {
    while !pool.is_closed() {
        wanted.notified().await;
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')").bind(NOTIFY_CHANNEL).execute(&pool).await {
            tracing::debug!(error = %e, "could not notify job workers; they poll");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Inserts `job` as of `now`.
async fn enqueue_at(
    conn: &mut PgConnection,
    job: &NewJob,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>, sqlx::Error> {
    let run_at = job.run_at.unwrap_or(now).max(now);
    let state = if run_at > now { JobState::Scheduled } else { JobState::Available };
    let inserted: Option<(Uuid,)> = sqlx::query_as(
        "INSERT INTO jobs (id, account_id, kind, queue, priority, state, max_attempts, run_at, args, unique_key, \
                           correlation_id, causation_id, inserted_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (kind, unique_key) WHERE unique_key IS NOT NULL \
           AND state NOT IN ('discarded', 'cancelled') DO NOTHING \
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(job.account_id)
    .bind(&job.kind)
    .bind(job.queue.as_str())
    .bind(job.priority)
    .bind(state.as_str())
    .bind(job.max_attempts)
    .bind(run_at)
    .bind(&job.args)
    .bind(job.unique_key(now))
    .bind(job.correlation_id)
    .bind(job.causation_id)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_some() {
        metrics::counter!("parley_jobs_enqueued_total", "queue" => job.queue.as_str()).increment(1);
    }
    Ok(inserted.map(|(id,)| id))
}
