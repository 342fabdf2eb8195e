//! What a projection is to the runtime.

use std::sync::Arc;

use async_trait::async_trait;
use parley_eventstore::RecordedEvent;
use sqlx::PgConnection;

use crate::error::ProjectionError;

/// A replayable read model: it writes only its own tables, so it can be rebuilt from the log at
/// any time. Side effects belong in process managers, never here.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stored name; also names its schemas and lease.
    fn name(&self) -> &'static str;
    /// Bump when the tables or the way events map onto them change: a new generation is built.
    fn version(&self) -> i32;
    /// Its tables, exposed as public views of the live generation.
    fn tables(&self) -> &'static [&'static str];
    /// DDL creating its tables and indexes, unqualified; run with `search_path` set to the
    /// generation's schema.
    fn schema(&self) -> &'static str;
    /// Indexes of [`Projection::schema`] that serve only queries: no statement of `apply` or
    /// `fill` reads through them. A rebuild fills the tables without them and builds each once,
    /// after the last batch, as a bulk load should. An index a batch reads through must not be
    /// listed (without it every such statement scans the table); an index that enforces a
    /// constraint `ON CONFLICT` relies on cannot be.
    fn deferred_indexes(&self) -> &'static [&'static str] {
        &[]
    }
    /// What it does with each event type of the domain: every type of
    /// `parley_aggregates::catalog` is in one of the two lists (a test checks every read model),
    /// so a new event type is never skipped by omission. Ignored events are skipped, and the
    /// checkpoint moves past them all the same.
    fn decides(&self) -> Decisions;
    /// Whether it reads events of this type.
    fn handles(&self, event_type: &str) -> bool {
        self.decides().handles.contains(&event_type)
    }
    /// Applies events, in log order, inside the batch's transaction (whose `search_path` is the
    /// generation's schema). Must not commit, and must be deterministic.
    async fn apply(&self, conn: &mut PgConnection, events: &[&RecordedEvent]) -> Result<(), ProjectionError>;
    /// Applies events to a generation a rebuild is filling from the start of the log: nothing
    /// reads its tables yet and no event reaches them twice (each batch commits with its
    /// checkpoint), so a projection may write them the way bulk loads are written (`COPY`).
    /// The rows must come out as `apply` would make them. By default, `apply`.
    async fn fill(&self, conn: &mut PgConnection, events: &[&RecordedEvent]) -> Result<(), ProjectionError> {
        self.apply(conn, events).await
    }
}

/// A projection's decision about every event type: those it applies, those it ignores, and
/// the stream types whose every event it ignores (an aggregate it has nothing to do with).
#[derive(Clone, Copy, Debug)]
pub struct Decisions {
    pub handles: &'static [&'static str],
    pub ignores: &'static [&'static str],
    pub ignores_streams: &'static [&'static str],
}

impl Decisions {
    /// Whether `event_type` is ignored, by name or by its stream type.
    pub fn ignores(&self, event_type: &str) -> bool {
        self.ignores.contains(&event_type)
            || parley_aggregates::catalog::STREAMS
                .iter()
                .any(|(stream, types)| self.ignores_streams.contains(stream) && types.contains(&event_type))
    }
}

/// The set of projections a process runs.
#[derive(Clone, Default)]
pub struct Projections {
    all: Vec<Arc<dyn Projection>>,
}

impl Projections {
    pub fn new(all: Vec<Arc<dyn Projection>>) -> Self {
        Self { all }
    }

    /// Every read model of Parley.
    pub fn standard() -> Self {
        Self::new(crate::read_models::all())
    }

    pub fn all(&self) -> &[Arc<dyn Projection>] {
        &self.all
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Projection>> {
        self.all.iter().find(|p| p.name() == name).cloned()
    }
}
