//! What operators and the admin API do with jobs: list them, retry or cancel one, prune finished
//! ones, and gauge the queues.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::job::{Job, JobState, QueueName};
use crate::queue::{JobError, JobQueue};

/// How long finished jobs are kept.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub completed: chrono::Duration,
    pub cancelled: chrono::Duration,
    pub discarded: chrono::Duration,
    /// The dead set keeps at most this many, newest first.
    pub discarded_rows: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            completed: chrono::Duration::days(1),
            cancelled: chrono::Duration::days(1),
            discarded: chrono::Duration::days(180),
            discarded_rows: 10_000,
        }
    }
}

/// What a prune deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub completed: u64,
    pub cancelled: u64,
    pub discarded: u64,
}

/// A page of an account's jobs.
#[derive(Clone, Debug)]
pub struct JobsPage {
    pub jobs: Vec<Job>,
    pub total: i64,
}

impl JobQueue {
    /// One job of the account.
    pub async fn get(&self, account_id: Uuid, id: Uuid) -> Result<Option<Job>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM jobs WHERE id = $1 AND account_id = $2")
            .bind(id)
            .bind(account_id)
            .fetch_optional(self.pool())
            .await
    }

    /// The account's jobs, newest first, optionally of one state and queue.
    pub async fn list(
        &self,
        account_id: Option<Uuid>,
        state: Option<JobState>,
        queue: Option<QueueName>,
        limit: i64,
        offset: i64,
    ) -> Result<JobsPage, sqlx::Error> {
        let state = state.map(JobState::as_str);
        let queue = queue.map(QueueName::as_str);
        let filter = "($1::uuid IS NULL OR account_id = $1) AND ($2::text IS NULL OR state = $2) \
                      AND ($3::text IS NULL OR queue = $3)";
        let (total,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM jobs WHERE {filter}"))
            .bind(account_id)
            .bind(state)
            .bind(queue)
            .fetch_one(self.pool())
            .await?;
        let jobs = sqlx::query_as(&format!(
            "SELECT * FROM jobs WHERE {filter} ORDER BY inserted_at DESC, id DESC LIMIT $4 OFFSET $5"
        ))
        .bind(account_id)
        .bind(state)
        .bind(queue)
        .bind(limit)
        .bind(offset)
        .fetch_all(self.pool())
        .await?;
        Ok(JobsPage { jobs, total })
    }

    /// Runs a dead or retryable job again now (with one more attempt if it had used them all).
    /// `account_id` `None`: any account's (operators).
    pub async fn retry(&self, account_id: Option<Uuid>, id: Uuid) -> Result<Job, JobError> {
        let mut conn = self.pool().acquire().await?;
        let job = self.retry_in(&mut conn, account_id, id).await?;
        drop(conn);
        self.wake().await;
        Ok(job)
    }

    /// [`JobQueue::retry`] in the caller's transaction; [`JobQueue::wake`] after it commits.
    pub async fn retry_in(
        &self,
        conn: &mut PgConnection,
        account_id: Option<Uuid>,
        id: Uuid,
    ) -> Result<Job, JobError> {
        let retried: Result<Option<Job>, sqlx::Error> = sqlx::query_as(
            "UPDATE jobs SET state = 'available', run_at = $3, completed_at = NULL, \
                    max_attempts = greatest(max_attempts, attempt + 1) \
             WHERE id = $1 AND ($2::uuid IS NULL OR account_id = $2) AND state IN ('discarded', 'retryable') \
             RETURNING *",
        )
        .bind(id)
        .bind(account_id)
        .bind(self.now())
        .fetch_optional(&mut *conn)
        .await;
        // A unique job retried while another with its key is live: that one stands.
        let retried = match retried {
            Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23505") => {
                return Err(JobError::Conflict("a duplicate of a live job with the same unique key".into()))
            }
            other => other?,
        };
        match retried {
            Some(job) => Ok(job),
            None => Err(why_not(conn, account_id, id).await?),
        }
    }

    /// Cancels a job that has not run yet (or waits to run again), or removes a dead one.
    pub async fn cancel(&self, account_id: Option<Uuid>, id: Uuid) -> Result<(), JobError> {
        let mut conn = self.pool().acquire().await?;
        self.cancel_in(&mut conn, account_id, id).await
    }

    /// [`JobQueue::cancel`] in the caller's transaction.
    pub async fn cancel_in(
        &self,
        conn: &mut PgConnection,
        account_id: Option<Uuid>,
        id: Uuid,
    ) -> Result<(), JobError> {
        let cancelled = sqlx::query(
            "UPDATE jobs SET state = 'cancelled', completed_at = $3 \
             WHERE id = $1 AND ($2::uuid IS NULL OR account_id = $2) \
               AND state IN ('available', 'scheduled', 'retryable')",
        )
        .bind(id)
        .bind(account_id)
        .bind(self.now())
        .execute(&mut *conn)
        .await?;
        if cancelled.rows_affected() == 1 {
            return Ok(());
        }
        let removed = sqlx::query(
            "DELETE FROM jobs WHERE id = $1 AND ($2::uuid IS NULL OR account_id = $2) AND state = 'discarded'",
        )
        .bind(id)
        .bind(account_id)
        .execute(&mut *conn)
        .await?;
        if removed.rows_affected() == 1 {
            return Ok(());
        }
        Err(why_not(conn, account_id, id).await?)
    }

    /// Deletes finished jobs past their retention, so the table and its indexes stay small.
    pub async fn prune(&self, retention: &Retention) -> Result<Pruned, sqlx::Error> {
        let now = self.now();
        let older = |age: chrono::Duration| now.checked_sub_signed(age).unwrap_or(now);
        let completed = sqlx::query("DELETE FROM jobs WHERE state = 'completed' AND completed_at < $1")
            .bind(older(retention.completed))
            .execute(self.pool())
            .await?
            .rows_affected();
        let cancelled = sqlx::query("DELETE FROM jobs WHERE state = 'cancelled' AND completed_at < $1")
            .bind(older(retention.cancelled))
            .execute(self.pool())
            .await?
            .rows_affected();
        let mut discarded = sqlx::query("DELETE FROM jobs WHERE state = 'discarded' AND completed_at < $1")
            .bind(older(retention.discarded))
            .execute(self.pool())
            .await?
            .rows_affected();
        discarded += sqlx::query(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = 'discarded' \
                                           ORDER BY completed_at DESC, id DESC OFFSET $1)",
        )
        .bind(retention.discarded_rows)
        .execute(self.pool())
        .await?
        .rows_affected();
        let pruned = Pruned { completed, cancelled, discarded };
        tracing::debug!(?pruned, "pruned finished jobs");
        Ok(pruned)
    }

    /// Depth and oldest age of every queue and state that has jobs waiting, as gauges.
    pub async fn record_depths(&self) -> Result<(), sqlx::Error> {
        let rows: Vec<(String, String, i64, Option<f64>)> = sqlx::query_as(
            "SELECT queue, state, count(*), extract(epoch FROM $1 - min(run_at))::float8 FROM jobs \
             WHERE state IN ('available', 'scheduled', 'running', 'retryable', 'discarded') GROUP BY 1, 2",
        )
        .bind(self.now())
        .fetch_all(self.pool())
        .await?;
        for queue in QueueName::ALL {
            for state in [
                JobState::Available,
                JobState::Scheduled,
                JobState::Running,
                JobState::Retryable,
                JobState::Discarded,
            ] {
                let row = rows.iter().find(|r| r.0 == queue.as_str() && r.1 == state.as_str());
                let labels = [("queue", queue.as_str()), ("state", state.as_str())];
                metrics::gauge!("parley_jobs", &labels).set(row.map_or(0.0, |r| r.2 as f64));
                let oldest = row.and_then(|r| r.3).unwrap_or(0.0).max(0.0);
                metrics::gauge!("parley_jobs_oldest_seconds", &labels).set(oldest);
            }
        }
        Ok(())
    }
}

/// Why a job could not be changed: it does not exist (for this account), or its state.
async fn why_not(
    conn: &mut PgConnection,
    account_id: Option<Uuid>,
    id: Uuid,
) -> Result<JobError, sqlx::Error> {
    let state: Option<(String,)> =
        sqlx::query_as("SELECT state FROM jobs WHERE id = $1 AND ($2::uuid IS NULL OR account_id = $2)")
            .bind(id)
            .bind(account_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(match state {
        Some((state,)) => JobError::Conflict(state),
        None => JobError::NotFound,
    })
}
