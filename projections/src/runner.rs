//! One runner per projection per cluster: it holds the projection's lease (a session advisory
//! lock on a dedicated connection, never a pooled one), applies batches to the live generation,
//! and hands over rebuilt generations. The lease and the loop are the event store's mechanism for
//! every checkpointed consumer ([`parley_eventstore::drive`]); process managers use it too.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parley_eventstore::{drive, Checkpointed, EventStore, Lease, LogCursor, Pace, Progress};
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::generations::{self, Generation, GenerationState};
use crate::projection::Projection;

/// How a runner takes, keeps and uses its lease.
#[derive(Clone, Debug)]
pub struct LeaseOptions {
    /// For the dedicated lease connection.
    pub connect: PgConnectOptions,
    /// How often a runner without the lease tries to take it.
    pub retry_every: Duration,
    /// How often the lease holder checks that its lease connection is alive.
    pub check_every: Duration,
    /// Events per batch (one transaction each).
    pub batch_size: i64,
    /// After a batch shorter than `batch_size`, the next read waits this long: under load the
    /// batches grow, and the statements per event shrink. It bounds the added read-your-writes
    /// latency.
    pub min_batch_interval: Duration,
}

impl LeaseOptions {
    pub fn new(connect: PgConnectOptions) -> Self {
        Self {
            connect,
            retry_every: Duration::from_secs(1),
            check_every: Duration::from_millis(500),
            batch_size: 1000,
            min_batch_interval: Duration::from_millis(10),
        }
    }
}

/// What one [`Runner::step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// Applied this many events (handled or skipped) to the live generation.
    Applied(usize),
    /// Nothing new to apply.
    Idle,
    /// Swapped in this rebuilt generation.
    HandedOver(i32),
    /// This runner does not hold the lease.
    NotLeader,
}

pub struct Runner {
    store: EventStore,
    projection: Arc<dyn Projection>,
    options: LeaseOptions,
    holder: String,
    lease: Option<Lease>,
    live: Option<Generation>,
    /// After a failed batch, events are applied one by one up to here, so the events before the
    /// failing one land and the failure names exactly one event.
    single_step_until: Option<LogCursor>,
    events_applied: u64,
    /// When this runner last lost its lease: it then waits before competing again, so that a
    /// healthy peer takes over rather than a runner whose connection just failed.
    lost_at: Option<Instant>,
    /// The newer version this runner last left the lease to (said once in the log).
    yielded_to: Option<i32>,
}

impl Runner {
    pub fn new(store: EventStore, projection: Arc<dyn Projection>, options: LeaseOptions) -> Self {
        Self {
            store,
            projection,
            options,
            holder: Uuid::now_v7().to_string(),
            lease: None,
            live: None,
            single_step_until: None,
            events_applied: 0,
            lost_at: None,
            yielded_to: None,
        }
    }

    /// This runner's identity, recorded on the generations it writes.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn is_leader(&self) -> bool {
        self.lease.is_some()
    }

    /// Events this runner applied to live generations.
    pub fn events_applied(&self) -> u64 {
        self.events_applied
    }

    /// The lease connection's application name (operators can find and kill it).
    pub fn lease_application_name(&self) -> String {
        format!("parley-lease/{}/{}", self.projection.name(), self.holder)
    }

    /// Tries to take the lease. On success the runner owns the live and ready generations
    /// (creating the first generation, or a new one for a new projection version).
    pub async fn acquire(&mut self) -> Result<bool, ProjectionError> {
        if self.lease.is_some() {
            return Ok(true);
        }
        if self.lost_at.is_some_and(|at| at.elapsed() < self.options.retry_every * 2) {
            return Ok(false);
        }
        let name = self.projection.name();
        let key = format!("parley-projection/{name}");
        let application_name = self.lease_application_name();
        let taken = Lease::try_take(
            self.store.pool(),
            &self.options.connect,
            &key,
            &application_name,
            self.options.check_every,
        )
        .await?;
        let Some(lease) = taken else { return Ok(false) };
        let pool = self.store.pool();
        crate::rebuild::retire_abandoned(&mut *pool.acquire().await?, name).await?;
        // During a rolling upgrade, a node of the previous version must not apply its older code
        // to a newer version's tables, nor build its older version again: once any generation of
        // a newer version exists, leadership stays with the nodes that run it.
        let newest = generations::load(pool, name).await?.iter().map(|g| g.version).max();
        if let Some(newer) = newest.filter(|v| *v > self.projection.version()) {
            self.leave_to(newer);
            lease.release().await;
            return Ok(false);
        }
        self.lease = Some(lease);
        sqlx::query(
            "UPDATE projection_generations SET holder = $2 WHERE name = $1 AND state IN ('live', 'ready')",
        )
        .bind(name)
        .bind(&self.holder)
        .execute(pool)
        .await?;
        let existing = generations::load(pool, name).await?;
        let live = match existing.iter().find(|g| g.state == GenerationState::Live) {
            Some(live) => live.clone(),
            None => {
                generations::create(pool, self.projection.as_ref(), GenerationState::Live, Some(&self.holder))
                    .await?
            }
        };
        let current_version_pending = existing.iter().any(|g| {
            g.version == self.projection.version()
                && matches!(g.state, GenerationState::Ready | GenerationState::Building)
        });
        if live.version != self.projection.version() && !current_version_pending {
            tracing::info!(projection = name, "projection version changed: building a new generation");
            generations::create(pool, self.projection.as_ref(), GenerationState::Ready, Some(&self.holder))
                .await?;
        }
        tracing::info!(projection = name, holder = %self.holder, generation = live.generation, "took the projection lease");
        self.live = Some(live);
        Ok(true)
    }

    /// Gives the lease up.
    pub async fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release().await;
        }
        self.live = None;
    }

    /// Leadership goes to the newest version running: said once per newer version, counted, and
    /// the lease left alone for a while (the caller releases it, if it holds it).
    fn leave_to(&mut self, newer: i32) {
        let name = self.projection.name();
        if self.yielded_to != Some(newer) {
            tracing::warn!(
                projection = name,
                ours = self.projection.version(),
                newer,
                "a newer version of this projection exists: leaving the lease to the nodes that run it"
            );
            self.yielded_to = Some(newer);
        }
        metrics::counter!("parley_projection_lease_yields_total", "projection" => name).increment(1);
        self.lost_at = Some(Instant::now());
    }

    /// Whether the lease connection is still alive (checked at most every `check_every`).
    async fn check_lease(&mut self) -> bool {
        let Some(lease) = self.lease.as_mut() else { return false };
        if lease.is_held().await {
            return true;
        }
        tracing::warn!(projection = self.projection.name(), "lost the projection lease");
        self.lease = None;
        self.live = None;
        self.lost_at = Some(Instant::now());
        false
    }

    /// Catches a generation a rebuild of this version marked ready up to the head and swaps it
    /// in. A generation of a newer version that is ready (a node of the next release rebuilt the
    /// read model and waits for it) is not this runner's to catch up with older code: it leaves
    /// the lease instead, to the node that built it. Callers must hold the lease.
    pub async fn hand_over(&mut self) -> Result<Option<i32>, ProjectionError> {
        let pool = self.store.pool();
        let name = self.projection.name();
        let ours = self.projection.version();
        let generations = generations::load(pool, name).await?;
        let newer_ready = generations
            .iter()
            .filter(|g| g.version > ours && matches!(g.state, GenerationState::Ready | GenerationState::Live))
            .map(|g| g.version)
            .max();
        if let Some(newer) = newer_ready {
            self.leave_to(newer);
            self.release().await;
            return Ok(None);
        }
        let Some(mut ready) =
            generations.into_iter().find(|g| g.state == GenerationState::Ready && g.version == ours)
        else {
            return Ok(None);
        };
        sqlx::query("UPDATE projection_generations SET holder = $3 WHERE name = $1 AND generation = $2")
            .bind(name)
            .bind(ready.generation)
            .bind(&self.holder)
            .execute(pool)
            .await?;
        ready.holder = Some(self.holder.clone());
        let batch = self.options.batch_size;
        generations::catch_up(
            &self.store,
            self.projection.as_ref(),
            &mut ready,
            Some(&self.holder),
            batch,
            |_| {},
        )
        .await?;
        generations::swap(pool, self.projection.as_ref(), &ready, &self.holder).await?;
        ready.state = GenerationState::Live;
        let generation = ready.generation;
        self.live = Some(ready);
        Ok(Some(generation))
    }

    /// Applies the next batch of the log to the live generation, or hands over a ready one when
    /// there is nothing new.
    pub async fn step(&mut self) -> Result<StepOutcome, ProjectionError> {
        if !self.check_lease().await {
            return Ok(StepOutcome::NotLeader);
        }
        let Some(live) = self.live.as_mut() else { return Ok(StepOutcome::NotLeader) };
        let single = self.single_step_until.is_some_and(|until| live.cursor < until);
        if !single {
            self.single_step_until = None;
        }
        let limit = if single { 1 } else { self.options.batch_size };
        let events = self.store.follow_after(live.cursor, limit).await?;
        if events.is_empty() {
            return Ok(match self.hand_over().await? {
                Some(generation) => StepOutcome::HandedOver(generation),
                None if self.lease.is_none() => StepOutcome::NotLeader,
                None => StepOutcome::Idle,
            });
        }
        match generations::apply_batch(
            self.store.pool(),
            self.projection.as_ref(),
            live,
            Some(&self.holder),
            &events,
        )
        .await
        {
            Ok(()) => {
                self.events_applied += events.len() as u64;
                Ok(StepOutcome::Applied(events.len()))
            }
            Err(ProjectionError::Fenced(name)) => {
                self.release().await;
                self.lost_at = Some(Instant::now());
                Err(ProjectionError::Fenced(name))
            }
            Err(e) => {
                let at = if single { events.first().map(|e| e.cursor()) } else { None };
                if !single {
                    self.single_step_until = events.last().map(|e| e.cursor());
                }
                if let Some(live) = self.live.as_ref() {
                    generations::record_error(self.store.pool(), live, &e, at).await?;
                }
                Err(e)
            }
        }
    }

    /// Runs until `shutdown` completes, driven like every checkpointed consumer of the log
    /// ([`drive`]): stalling only this projection after failures, giving the lease up at the end.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let store = self.store.clone();
        let pace = Pace {
            retry_every: self.options.retry_every,
            batch_size: self.options.batch_size,
            min_batch_interval: self.options.min_batch_interval,
        };
        drive(self, store, pace, shutdown).await
    }
}

#[async_trait]
impl Checkpointed for Runner {
    type Error = ProjectionError;

    fn name(&self) -> String {
        self.projection.name().to_owned()
    }

    async fn acquire(&mut self) -> Result<bool, ProjectionError> {
        Runner::acquire(self).await
    }

    fn is_leader(&self) -> bool {
        self.lease.is_some()
    }

    async fn step(&mut self) -> Result<Progress, ProjectionError> {
        Ok(match Runner::step(self).await? {
            StepOutcome::Applied(n) => Progress::Moved(n),
            StepOutcome::HandedOver(_) => Progress::Worked,
            StepOutcome::Idle => Progress::Idle,
            StepOutcome::NotLeader => Progress::NotLeader,
        })
    }

    async fn release(&mut self) {
        Runner::release(self).await
    }
}
