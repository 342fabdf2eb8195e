//! The platform's own jobs: what the write side runs in the background, and the cron schedules
//! that enqueue it.

use std::time::Duration;

use async_trait::async_trait;
use parley_jobs::{Handler, Handlers, Job, JobQueue, NewJob, QueueName, Retention, Schedule};
use serde_json::json;
use sqlx::PgPool;

/// Deletes what has outlived its use: idempotency records past their retention, old
/// rate-limit windows (login protection's and the per-credential API counts'), finished jobs past
/// theirs.
pub const PRUNE: &str = "platform.prune";
/// Does nothing (after `sleep_ms` when given): for measuring the queue and for drills.
pub const NOOP: &str = "platform.noop";
/// Deletes the refresh-token index rows of an ended session (enqueued by the `ended_sessions`
/// process manager).
pub const FORGET_SESSION_TOKENS: &str = "sessions.forget_tokens";

/// How long an idempotency key is remembered (API: 24 h), and old rate-limit windows kept.
const KEEP: &str = "1 day";

struct Prune {
    pool: PgPool,
    queue: JobQueue,
}

#[async_trait]
impl Handler for Prune {
    fn kind(&self) -> &'static str {
        PRUNE
    }

    async fn run(&self, _job: &Job) -> Result<(), parley_jobs::Failure> {
        let records = sqlx::query("DELETE FROM idempotency_records WHERE created_at < now() - $1::interval")
            .bind(KEEP)
            .execute(&self.pool)
            .await
            .map_err(|e| e.to_string())?
            .rows_affected();
        let windows = sqlx::query("DELETE FROM rate_limits WHERE window_start < now() - $1::interval")
            .bind(KEEP)
            .execute(&self.pool)
            .await
            .map_err(|e| e.to_string())?
            .rows_affected();
        // The per-credential API counts: a window is over after a minute.
        let api_windows =
            sqlx::query("DELETE FROM api_rate_counts WHERE window_start < now() - interval '1 hour'")
                .execute(&self.pool)
                .await
                .map_err(|e| e.to_string())?
                .rows_affected();
        // Large signals live for as long as it takes every node to read them.
        sqlx::query("DELETE FROM signals WHERE created_at < now() - interval '1 minute'")
            .execute(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        let jobs = self.queue.prune(&Retention::default()).await.map_err(|e| e.to_string())?;
        if jobs.completed + jobs.cancelled + jobs.discarded > 0 {
            // The deleted rows' space is reused at once, whether or not autovacuum runs here.
            sqlx::query("VACUUM jobs").execute(&self.pool).await.map_err(|e| e.to_string())?;
        }
        tracing::info!(records, windows, api_windows, ?jobs, "pruned");
        Ok(())
    }
}

struct Noop;

#[async_trait]
impl Handler for Noop {
    fn kind(&self) -> &'static str {
        NOOP
    }

    async fn run(&self, job: &Job) -> Result<(), parley_jobs::Failure> {
        if let Some(ms) = job.args.get("sleep_ms").and_then(|v| v.as_u64()) {
            tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
        }
        Ok(())
    }
}

struct ForgetSessionTokens {
    pool: PgPool,
}

#[async_trait]
impl Handler for ForgetSessionTokens {
    fn kind(&self) -> &'static str {
        FORGET_SESSION_TOKENS
    }

    /// Idempotent: deleting them again deletes nothing.
    async fn run(&self, job: &Job) -> Result<(), parley_jobs::Failure> {
        let session: uuid::Uuid = job.args["session_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "no session_id in the job's arguments".to_owned())?;
        sqlx::query("DELETE FROM session_tokens WHERE session_id = $1")
            .bind(session)
            .execute(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// The handlers of the platform's jobs.
pub fn handlers(pool: PgPool, queue: JobQueue) -> Handlers {
    Handlers::default()
        .with(Prune { pool: pool.clone(), queue })
        .with(Noop)
        .with(ForgetSessionTokens { pool })
}

/// The platform's cron schedules: pruning every minute.
pub fn schedules() -> Vec<Schedule> {
    let prune = NewJob::new(PRUNE, json!({})).queue(QueueName::Low).max_attempts(3);
    vec![Schedule::new(PRUNE, "0 * * * * *", prune)]
}
