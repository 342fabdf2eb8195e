//! The one mechanism behind every checkpointed consumer of the log, read models and process
//! managers alike: a cluster-wide [`Lease`] (one runner per consumer), a fenced checkpoint moved
//! in the transaction that does the batch's work (each consumer's own), and the loop that drives
//! it ([`drive`]): take the lease when free, step as events arrive, re-poll within milliseconds
//! while events wait behind the commit horizon, back off after failures, give the lease up at the
//! end.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{Connection, PgConnection};

use crate::store::EventStore;
use crate::tail::{HORIZON_POLL_MAX, HORIZON_POLL_MIN};

/// A condition to add to a single-statement transaction (an `UPDATE` run on its own) so that its
/// commit does not wait for the WAL flush: the statement sets `synchronous_commit` off for its
/// own transaction, in a sub-query PostgreSQL evaluates once, before any row (a one-time
/// filter). For writes the log can redo: a checkpoint moved past events its consumer ignores, a
/// read model's batch. A crash of PostgreSQL may lose the last few hundred milliseconds of them
/// (never a commit made after them, nor the log's own appends, which commit synchronously): the
/// consumer then reads those events again. Committed, they are visible at once, like any commit.
pub const ASYNC_COMMIT: &str = "(SELECT set_config('synchronous_commit', 'off', true)) = 'off'";

/// A cluster-wide lease: a session advisory lock held on a dedicated connection (never a pooled
/// one). When its node dies the connection closes, and the lock goes with it.
pub struct Lease {
    conn: PgConnection,
    check_every: Duration,
    last_check: Instant,
}

impl Lease {
    /// Takes the lease named `key` if nobody holds it; the connection is named
    /// `application_name` so that operators can find (and kill) it.
    ///
    /// Whether it is free is asked first on a connection of `pool` (taking the lock for one
    /// statement): a runner without the lease asks every second on every node, and a new
    /// connection for each question costs PostgreSQL a backend's start.
    pub async fn try_take(
        pool: &PgPool,
        connect: &PgConnectOptions,
        key: &str,
        application_name: &str,
        check_every: Duration,
    ) -> Result<Option<Lease>, sqlx::Error> {
        // A transaction-level try, in the statement's own transaction: given back when it ends,
        // whatever happens, so a pooled connection never keeps it.
        let (free,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(key)
            .fetch_one(pool)
            .await?;
        if !free {
            metrics::counter!("parley_lease_attempts_total", "outcome" => "held").increment(1);
            return Ok(None);
        }
        let options = connect.clone().application_name(application_name);
        let mut conn = PgConnection::connect_with(&options).await?;
        let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(key)
            .fetch_one(&mut conn)
            .await?;
        if !got {
            metrics::counter!("parley_lease_attempts_total", "outcome" => "lost_race").increment(1);
            let _ = conn.close().await;
            return Ok(None);
        }
        metrics::counter!("parley_lease_attempts_total", "outcome" => "taken").increment(1);
        Ok(Some(Lease { conn, check_every, last_check: Instant::now() }))
    }

    /// Whether the lease is still held: its connection answers (asked at most every
    /// `check_every`).
    pub async fn is_held(&mut self) -> bool {
        if self.last_check.elapsed() < self.check_every {
            return true;
        }
        self.last_check = Instant::now();
        self.conn.ping().await.is_ok()
    }

    /// Gives the lease up.
    pub async fn release(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock_all()").execute(&mut self.conn).await;
        let _ = self.conn.close().await;
    }
}

/// What one step of a checkpointed consumer did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Moved its checkpoint past this many events.
    Moved(usize),
    /// Did other work of its own (a read model swapping in a rebuilt generation).
    Worked,
    /// Nothing new.
    Idle,
    /// Does not hold the lease.
    NotLeader,
}

/// A checkpointed consumer, as [`drive`] runs it.
#[async_trait]
pub trait Checkpointed: Send {
    type Error: Display + Send;
    /// For logs.
    fn name(&self) -> String;
    /// Tries to take the lease; `true` when held.
    async fn acquire(&mut self) -> Result<bool, Self::Error>;
    fn is_leader(&self) -> bool;
    /// One batch: handled and checkpointed in one transaction.
    async fn step(&mut self) -> Result<Progress, Self::Error>;
    async fn release(&mut self);
}

/// How [`drive`] paces a consumer.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// How often a runner without the lease tries to take it.
    pub retry_every: Duration,
    /// Events per batch: a shorter batch means the consumer is at the head.
    pub batch_size: i64,
    /// After a batch shorter than `batch_size`, the next read waits this long: under load the
    /// batches grow and the statements per event shrink. It bounds the added latency.
    pub min_batch_interval: Duration,
}

/// How long a consumer waits without any wake-up before it polls anyway.
const BACKSTOP: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Runs `consumer` until `shutdown`: takes the lease when it can, steps as events arrive (woken
/// by this node's commits and other nodes' `NOTIFY`), backs off after failures (stalling only
/// this consumer), and gives the lease up at the end.
pub async fn drive<C: Checkpointed>(
    mut consumer: C,
    store: EventStore,
    pace: Pace,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut wake = store.subscribe();
    let mut backoff = Duration::ZERO;
    let mut horizon_delay = HORIZON_POLL_MIN;
    let name = consumer.name();
    loop {
        if !consumer.is_leader() {
            let acquired = match consumer.acquire().await {
                Ok(acquired) => acquired,
                Err(e) => {
                    tracing::warn!(consumer = %name, error = %e, "could not take the lease");
                    false
                }
            };
            if !acquired {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(pace.retry_every) => continue,
                }
            }
        }
        wake.mark_seen();
        let pause = match consumer.step().await {
            Ok(Progress::Moved(n)) => {
                backoff = Duration::ZERO;
                horizon_delay = HORIZON_POLL_MIN;
                // A short batch means we are at the head: let the next one fill up a little.
                if (n as i64) < pace.batch_size {
                    pace.min_batch_interval
                } else {
                    Duration::ZERO
                }
            }
            Ok(Progress::Worked | Progress::NotLeader) => Duration::ZERO,
            Ok(Progress::Idle) => match store.follower_behind_horizon().await {
                // Committed events wait behind an older open transaction: look again soon.
                Ok(true) => {
                    let pause = horizon_delay;
                    horizon_delay = (horizon_delay * 2).min(HORIZON_POLL_MAX);
                    pause
                }
                _ => {
                    horizon_delay = HORIZON_POLL_MIN;
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = wake.wait(BACKSTOP) => {}
                    }
                    Duration::ZERO
                }
            },
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(100), MAX_BACKOFF);
                tracing::error!(consumer = %name, error = %e, retry_in = ?backoff, "batch failed");
                backoff
            }
        };
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    consumer.release().await;
}
