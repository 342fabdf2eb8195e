//! Checkpointed consumers of the log that are not read models: process managers. One runner per
//! consumer per cluster holds its lease (a session advisory lock on a dedicated connection); each
//! batch is handled in one transaction that also moves the consumer's checkpoint, with a
//! compare-and-set on the previous cursor and the holder. So whatever a consumer does in that
//! transaction (enqueue a job) happens exactly once per event, even when its node dies mid-batch.
//! A consumer seen for the first time starts at the head of the log: it acts on what happens from
//! then on, and is never replayed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::checkpointed::{drive, Checkpointed, Lease, Pace, Progress, ASYNC_COMMIT};
use crate::cursor::LogCursor;
use crate::error::StoreError;
use crate::event::RecordedEvent;
use crate::store::EventStore;

/// A checkpointed consumer of the log.
#[async_trait]
pub trait Consumer: Send + Sync + 'static {
    /// Stored name: its checkpoint row and lease.
    fn name(&self) -> &'static str;
    /// Raise it when a release changes what the consumer acts on (new event types): during a
    /// rolling upgrade the lease goes to the newest version running, and an older holder acts
    /// on nothing more once a newer one has asked for it.
    fn version(&self) -> i32 {
        1
    }
    /// Whether it acts on events of this type; others only move its checkpoint.
    fn wants(&self, event_type: &str) -> bool;
    /// Acts on `events` (in log order) inside the batch's transaction, which must not be
    /// committed here; answers how many rows it wrote (jobs enqueued). A batch that wrote none
    /// commits its checkpoint without waiting for the WAL flush, and [`Consumer::committed`] is
    /// not called for it.
    async fn handle(&self, tx: &mut PgConnection, events: &[&RecordedEvent]) -> Result<u64, StoreError>;
    /// Called after a batch that wrote rows committed (to wake whoever it enqueued for).
    async fn committed(&self) {}
}

/// How often the lease holder makes sure its lease connection is alive.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// What one [`ConsumerRunner::step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerStep {
    /// Moved past this many events.
    Consumed(usize),
    Idle,
    /// Another runner holds the lease.
    NotLeader,
}

/// Runs one consumer.
pub struct ConsumerRunner {
    store: EventStore,
    consumer: Arc<dyn Consumer>,
    connect: PgConnectOptions,
    holder: String,
    lease: Option<Lease>,
    cursor: Option<LogCursor>,
    batch_size: i64,
    /// Whether this runner's version was written where older holders see it.
    announced: bool,
}

impl ConsumerRunner {
    pub fn new(store: EventStore, consumer: Arc<dyn Consumer>, connect: PgConnectOptions) -> Self {
        Self {
            store,
            consumer,
            connect,
            holder: Uuid::now_v7().to_string(),
            lease: None,
            cursor: None,
            batch_size: 500,
            announced: false,
        }
    }

    /// Events per batch (one transaction each).
    pub fn batch_size(mut self, batch_size: i64) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Tries to take the lease; on success reads (or, the first time, creates at the head) the
    /// checkpoint and takes it over.
    pub async fn acquire(&mut self) -> Result<bool, StoreError> {
        if self.lease.is_some() {
            return Ok(true);
        }
        let name = self.consumer.name();
        let ours = self.consumer.version();
        let pool = self.store.pool();
        if !self.announced {
            // Say this version runs, so that an older holder stops acting and lets go.
            let announced = sqlx::query(
                "UPDATE consumer_checkpoints SET version = greatest(version, $2) WHERE name = $1",
            )
            .bind(name)
            .bind(ours)
            .execute(pool)
            .await?;
            self.announced = announced.rows_affected() == 1;
        }
        let application_name = format!("parley-consumer/{name}/{}", self.holder);
        let key = format!("parley-consumer/{name}");
        let Some(lease) = Lease::try_take(pool, &self.connect, &key, &application_name, CHECK_EVERY).await?
        else {
            return Ok(false);
        };
        let head = self.store.head().await?;
        sqlx::query(
            "INSERT INTO consumer_checkpoints (name, cursor_tx, cursor_position, version) \
             VALUES ($1, $2::text::xid8, $3, $4) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(head.transaction_id_text())
        .bind(head.position)
        .bind(ours)
        .execute(pool)
        .await?;
        self.announced = true;
        let taken: Option<(String, i64)> = sqlx::query_as(
            "UPDATE consumer_checkpoints SET holder = $2, updated_at = now() WHERE name = $1 AND version <= $3 \
             RETURNING cursor_tx::text, cursor_position",
        )
        .bind(name)
        .bind(&self.holder)
        .bind(ours)
        .fetch_optional(pool)
        .await?;
        let Some((tx, position)) = taken else {
            // A newer version runs somewhere: leadership is its.
            tracing::info!(
                consumer = name,
                ours,
                "a newer version of this consumer runs: leaving it the lease"
            );
            metrics::counter!("parley_consumer_lease_yields_total", "consumer" => name).increment(1);
            lease.release().await;
            return Ok(false);
        };
        let transaction_id = tx.parse().map_err(|_| StoreError::Decode(format!("checkpoint of {name}")))?;
        self.cursor = Some(LogCursor::new(transaction_id, position));
        self.lease = Some(lease);
        tracing::info!(consumer = name, holder = %self.holder, "took the consumer lease");
        Ok(true)
    }

    /// Gives the lease up.
    pub async fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release().await;
        }
        self.cursor = None;
    }

    /// Handles the next batch of the log and moves the checkpoint past it, in one transaction.
    #[tracing::instrument(skip_all, fields(consumer = self.consumer.name()))]
    pub async fn step(&mut self) -> Result<ConsumerStep, StoreError> {
        let Some(cursor) = self.cursor else { return Ok(ConsumerStep::NotLeader) };
        if let Some(lease) = self.lease.as_mut() {
            if !lease.is_held().await {
                tracing::warn!(consumer = self.consumer.name(), "lost the consumer lease");
                self.lease = None;
                self.cursor = None;
                return Ok(ConsumerStep::NotLeader);
            }
        }
        let events = self.store.follow_after(cursor, self.batch_size).await?;
        let Some(last) = events.last() else { return Ok(ConsumerStep::Idle) };
        let wanted: Vec<&RecordedEvent> =
            events.iter().filter(|e| self.consumer.wants(&e.event_type)).collect();
        let next = last.cursor();
        let checkpoint = Checkpoint {
            name: self.consumer.name(),
            from: cursor,
            to: next,
            holder: &self.holder,
            version: self.consumer.version(),
        };
        let (moved, wrote) = if wanted.is_empty() {
            // Nothing to do but move past: one statement.
            (checkpoint.moved(self.store.pool(), 0).await?, 0)
        } else {
            let mut tx = self.store.pool().begin().await?;
            let wrote = self.consumer.handle(&mut tx, &wanted).await?;
            let moved = checkpoint.moved(&mut *tx, wrote).await?;
            if moved {
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            (moved, wrote)
        };
        if !moved {
            // Another runner took over, or a newer version asked for the lease: this one must
            // not write.
            self.release().await;
            return Ok(ConsumerStep::NotLeader);
        }
        self.cursor = Some(next);
        if wrote > 0 {
            self.consumer.committed().await;
        }
        metrics::counter!("parley_consumer_events_total", "consumer" => self.consumer.name())
            .increment(events.len() as u64);
        Ok(ConsumerStep::Consumed(events.len()))
    }

    /// Runs until `shutdown` (see [`drive`]).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let store = self.store.clone();
        let pace = Pace {
            retry_every: Duration::from_secs(1),
            batch_size: self.batch_size,
            min_batch_interval: Duration::from_millis(10),
        };
        drive(self, store, pace, shutdown).await
    }
}

/// A consumer's checkpoint moving from one cursor to the next, fenced by its holder and by the
/// newest version announced.
struct Checkpoint<'a> {
    name: &'a str,
    from: LogCursor,
    to: LogCursor,
    holder: &'a str,
    version: i32,
}

impl Checkpoint<'_> {
    /// Moves it in `conn`'s transaction; `false` when another runner took over or a newer
    /// version runs. A batch that
    /// wrote nothing else commits without waiting for the WAL flush: lost in a crash, its events
    /// are read again and skipped again.
    async fn moved<'c>(&self, conn: impl sqlx::PgExecutor<'c>, wrote: u64) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE consumer_checkpoints SET cursor_tx = $2::text::xid8, cursor_position = $3, updated_at = now() \
             WHERE name = $1 AND cursor_tx = $4::text::xid8 AND cursor_position = $5 AND holder = $6 \
               AND version <= $7{}",
            if wrote == 0 { format!(" AND {ASYNC_COMMIT}") } else { String::new() }
        );
        let moved = sqlx::query(&sql)
            .bind(self.name)
            .bind(self.to.transaction_id_text())
            .bind(self.to.position)
            .bind(self.from.transaction_id_text())
            .bind(self.from.position)
            .bind(self.holder)
            .bind(self.version)
            .execute(conn)
            .await?
            .rows_affected();
        Ok(moved == 1)
    }
}

#[async_trait]
impl Checkpointed for ConsumerRunner {
    type Error = StoreError;

    fn name(&self) -> String {
        self.consumer.name().to_owned()
    }

    async fn acquire(&mut self) -> Result<bool, StoreError> {
        ConsumerRunner::acquire(self).await
    }

    fn is_leader(&self) -> bool {
        self.lease.is_some()
    }

    async fn step(&mut self) -> Result<Progress, StoreError> {
        Ok(match ConsumerRunner::step(self).await? {
            ConsumerStep::Consumed(n) => Progress::Moved(n),
            ConsumerStep::Idle => Progress::Idle,
            ConsumerStep::NotLeader => Progress::NotLeader,
        })
    }

    async fn release(&mut self) {
        ConsumerRunner::release(self).await
    }
}
