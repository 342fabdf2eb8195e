//! A unit of work: one write transaction in which commands change aggregates (lock, load from
//! snapshot and tail or the cache, decide, append with write-side rows and snapshot), and the
//! steps it shares with group commits.

use std::sync::Arc;
use std::time::Instant;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use parley_aggregates::{from_payload, to_payload};
use parley_eventstore::idempotency::{self, IdempotencyCheck, IdempotencyKey, StoredResponse};
use parley_eventstore::snapshots::{self, Snapshot};
use parley_eventstore::{
    AppendedEvent, LogCursor, Metadata, NewEvent, RecordedEvent, StoreTransaction, StreamAppend, StreamHead,
    StreamKey,
};
use sqlx::PgConnection;

use crate::cache::AggregateCache;
use crate::context::CommandContext;
use crate::error::DispatchError;
use crate::write_side::WriteSide;

/// The aggregate's latest usable snapshot (of its current state shape, and not newer than
/// `up_to` when given) and the version it reflects; the default state at 0 without one.
pub(crate) async fn from_snapshot<A: WriteSide>(
    conn: &mut PgConnection,
    stream: &StreamKey,
    up_to: Option<i64>,
) -> Result<(A, i64), DispatchError> {
    if A::SNAPSHOT_EVERY == 0 {
        return Ok((A::default(), 0));
    }
    let Some(snapshot) = snapshots::load(conn, stream, A::STATE_VERSION).await? else {
        return Ok((A::default(), 0));
    };
    if up_to.is_some_and(|v| snapshot.version > v) {
        return Ok((A::default(), 0));
    }
    // A snapshot that no longer decodes is only a cache miss.
    Ok(serde_json::from_value(snapshot.state).map(|state| (state, snapshot.version)).unwrap_or_default())
}

/// Applies stored events of the aggregate's stream, in order.
pub(crate) fn apply_events<A: WriteSide>(
    aggregate: &mut A,
    events: &[RecordedEvent],
) -> Result<(), DispatchError> {
    for event in events {
        aggregate.apply(from_payload(&event.event_type, &event.payload)?);
    }
    Ok(())
}

/// Runs `command` on `aggregate`: the state after it and the events it decided.
pub(crate) async fn decide<A: WriteSide>(
    mut aggregate: A,
    command: A::Command,
) -> Result<(A, Vec<A::Event>), DispatchError> {
    let sink = EventSink::default();
    aggregate.handle(command, &(), &sink).await.map_err(|e| DispatchError::Domain(e.into()))?;
    let events = sink.collect().await;
    Ok((aggregate, events))
}

/// A decision on a state held without reading the stream, to be checked by the append.
pub(crate) struct Assumed<A: Aggregate> {
    pub aggregate: A,
    pub events: Vec<A::Event>,
    /// The version the state was at, which the append expects.
    pub version: i64,
    pub cursor: Option<LogCursor>,
}

/// Decides `command` on the cached latest state when there is one, or on the empty state for a
/// command that starts its stream, without reading the stream (the append checks the version
/// under the stream's lock). `None` when there is no such state, or when the decision cannot
/// stand without reading: a refusal may come from a stale state (another node wrote since, or
/// the stream was not new), and so may deciding nothing on a stream assumed to be new; either
/// stands only when the state read under the lock says the same.
pub(crate) async fn decide_assumed<A: WriteSide>(
    cache: &AggregateCache,
    ctx: &CommandContext,
    stream: &StreamKey,
    command: &A::Command,
) -> Result<Option<Assumed<A>>, DispatchError> {
    let (state, version, cursor, assumed_new) = match cache.latest::<A>(stream) {
        Some(latest) if latest.account_id != ctx.account_id => return Err(DispatchError::NotFound(A::TYPE)),
        // Another node moved the stream on: load it (only the events after this state).
        Some(latest) if latest.behind => return Ok(None),
        Some(latest) => (latest.state, latest.version, latest.cursor, false),
        None if A::creates_stream(command) => (A::default(), 0, None, true),
        None => return Ok(None),
    };
    Ok(match decide(state, command.clone()).await {
        Ok((aggregate, events)) if !(assumed_new && events.is_empty()) => {
            Some(Assumed { aggregate, events, version, cursor })
        }
        _ => None,
    })
}

/// The stored form of an aggregate's new events.
pub(crate) fn to_new_events<E: DomainEvent>(events: &[E]) -> Result<Vec<NewEvent>, DispatchError> {
    events
        .iter()
        .map(|event| {
            let (event_type, payload) = to_payload(event)?;
            let schema_version = event.event_version().parse().unwrap_or(1);
            Ok(NewEvent::new(event_type, schema_version, payload))
        })
        .collect()
}

/// Whether a stream going from version `before` to `after` passes a multiple of
/// `A::SNAPSHOT_EVERY` (a snapshot is then saved with the append).
pub(crate) fn snapshot_due<A: WriteSide>(before: i64, after: i64) -> bool {
    A::SNAPSHOT_EVERY > 0 && after / A::SNAPSHOT_EVERY > before / A::SNAPSHOT_EVERY
}

/// Saves a snapshot when the stream went from `before` past a multiple of `A::SNAPSHOT_EVERY`
/// to `after`, in the append's transaction.
pub(crate) async fn snapshot_if_due<A: WriteSide>(
    conn: &mut PgConnection,
    stream: &StreamKey,
    before: i64,
    after: i64,
    aggregate: &A,
) -> Result<(), DispatchError> {
    if snapshot_due::<A>(before, after) {
        let state = serde_json::to_value(aggregate)
            .map_err(|e| parley_aggregates::PayloadError::Shape(e.to_string()))?;
        snapshots::save(conn, stream, A::STATE_VERSION, &Snapshot { version: after, state }).await?;
    }
    Ok(())
}

/// The result of one command on one aggregate.
#[derive(Debug)]
pub struct Executed<A: Aggregate> {
    /// The aggregate's state after the command.
    pub aggregate: A,
    /// The new events, in order (empty when the command changed nothing).
    pub events: Vec<A::Event>,
    /// Where each new event landed.
    pub appended: Vec<AppendedEvent>,
    /// The stream version after the command.
    pub version: i64,
    /// The cursor of the last new event, or of the stream's head when nothing changed.
    pub cursor: Option<LogCursor>,
}

/// Puts a committed state into the cache.
type Remember = Box<dyn FnOnce(&AggregateCache) + Send>;

/// One write transaction. Dropping it without [`UnitOfWork::commit`] rolls everything back.
pub struct UnitOfWork {
    tx: StoreTransaction,
    cache: Arc<AggregateCache>,
    /// Whether commands may decide on cached state without locking first (first attempts only:
    /// a retry after a conflict always locks, so contended writers queue instead of spinning).
    optimistic: bool,
    /// States to cache once (and only if) this unit commits.
    committed_states: Vec<Remember>,
    ctx: CommandContext,
    metadata: Metadata,
    last: Option<LogCursor>,
    started: Instant,
    label: &'static str,
}

impl UnitOfWork {
    pub(crate) fn new(tx: StoreTransaction, cache: Arc<AggregateCache>, ctx: &CommandContext) -> Self {
        Self {
            tx,
            cache,
            optimistic: true,
            committed_states: Vec::new(),
            ctx: ctx.clone(),
            metadata: ctx.metadata(),
            last: None,
            started: Instant::now(),
            label: "unknown",
        }
    }

    /// Lets (or not) commands decide on cached state without locking first.
    pub(crate) fn set_optimistic(&mut self, optimistic: bool) {
        self.optimistic = optimistic;
    }

    pub fn context(&self) -> &CommandContext {
        &self.ctx
    }

    /// The cursor of the last event this unit appended so far.
    pub fn last_cursor(&self) -> Option<LogCursor> {
        self.last
    }

    /// Locks every stream this unit will write, before anything else: needed when it writes
    /// more than one, so that none of their heads can be younger than this transaction.
    pub async fn lock(&mut self, streams: &[StreamKey]) -> Result<(), DispatchError> {
        self.tx.lock_streams(streams).await?;
        Ok(())
    }

    /// The transaction's connection, for reads of write-side index rows.
    pub fn conn(&mut self) -> &mut PgConnection {
        self.tx.conn()
    }

    /// Checks an idempotency key in this transaction (holding it until commit).
    pub async fn check_idempotency(
        &mut self,
        key: &IdempotencyKey,
    ) -> Result<IdempotencyCheck, DispatchError> {
        Ok(idempotency::check(self.tx.conn(), key).await?)
    }

    /// Checks an optional key: `Some` stored response to replay, `None` to go on; a reused or
    /// busy key is an error.
    pub async fn guard(
        &mut self,
        key: Option<&IdempotencyKey>,
    ) -> Result<Option<StoredResponse>, DispatchError> {
        let Some(key) = key else { return Ok(None) };
        match self.check_idempotency(key).await? {
            IdempotencyCheck::New => Ok(None),
            IdempotencyCheck::Replay(stored) => Ok(Some(stored)),
            IdempotencyCheck::Mismatch => Err(DispatchError::IdempotencyKeyReused),
            IdempotencyCheck::InProgress => Err(DispatchError::IdempotencyInProgress),
        }
    }

    /// Stores the response for an idempotency key, committed with the events.
    pub async fn record_idempotency(
        &mut self,
        key: &IdempotencyKey,
        response: &StoredResponse,
    ) -> Result<(), DispatchError> {
        Ok(idempotency::record(self.tx.conn(), key, response).await?)
    }

    /// Locks the aggregate's stream and loads it: snapshot, then the events after it.
    /// Another account's stream is not found.
    pub async fn load<A: WriteSide>(&mut self, stream_id: &str) -> Result<(A, StreamHead), DispatchError> {
        let stream = StreamKey::new(A::TYPE, stream_id);
        let head = self.tx.lock_stream(&stream).await?;
        if head.account_id.is_some_and(|a| a != self.ctx.account_id) {
            return Err(DispatchError::NotFound(A::TYPE));
        }
        // From the cached state when it is the head's, or close behind it (another node
        // appended a few events since: read only those); else from the latest snapshot.
        let cached = self.cache.latest::<A>(&stream).filter(|c| {
            c.version <= head.version
                && (A::SNAPSHOT_EVERY == 0 || head.version - c.version <= A::SNAPSHOT_EVERY)
        });
        let count = |result: &'static str| {
            metrics::counter!("parley_aggregate_cache_total", "result" => result).increment(1)
        };
        let (mut aggregate, from) = match cached {
            Some(cached) if cached.version == head.version => {
                count("hit");
                return Ok((cached.state, head));
            }
            Some(cached) => {
                count("behind");
                (cached.state, cached.version)
            }
            None => {
                count("miss");
                if head.version > 0 {
                    from_snapshot::<A>(self.tx.conn(), &stream, Some(head.version)).await?
                } else {
                    (A::default(), 0)
                }
            }
        };
        if head.version > from {
            apply_events(&mut aggregate, &self.tx.read_stream(&stream, from).await?)?;
        }
        // Committed state, read under the lock: safe to cache now.
        if let Some(account_id) = head.account_id {
            self.cache.put(stream, head.version, account_id, head.cursor, aggregate.clone());
        }
        Ok((aggregate, head))
    }

    /// Runs `command` on the aggregate `A` with id `stream_id` and appends what it decides.
    #[tracing::instrument(skip_all, fields(aggregate = A::TYPE, stream_id))]
    pub async fn execute<A: WriteSide>(
        &mut self,
        stream_id: &str,
        command: A::Command,
    ) -> Result<Executed<A>, DispatchError> {
        if self.label == "unknown" {
            self.label = A::TYPE;
        }
        let stream = StreamKey::new(A::TYPE, stream_id);
        // Decide on state held without reading when there is some; else, and on every retry,
        // lock the stream and load it.
        let decided = if self.optimistic {
            decide_assumed::<A>(&self.cache, &self.ctx, &stream, &command).await?
        } else {
            None
        };
        let (aggregate, events, version, head_cursor) = match decided {
            Some(Assumed { aggregate, events, version, cursor }) => (aggregate, events, version, cursor),
            None => {
                let (aggregate, head) = self.load::<A>(stream_id).await?;
                let (aggregate, events) = decide(aggregate, command).await?;
                (aggregate, events, head.version, head.cursor)
            }
        };
        if events.is_empty() {
            return Ok(Executed { aggregate, events, appended: Vec::new(), version, cursor: head_cursor });
        }
        let new_events = to_new_events(&events)?;
        let appended = self
            .tx
            .append(&StreamAppend {
                account_id: self.ctx.account_id,
                stream: stream.clone(),
                expected_version: version,
                events: new_events,
                metadata: self.metadata.clone(),
            })
            .await?;
        let head_version = version;
        A::write_side(self.tx.conn(), self.ctx.account_id, &stream, &events).await?;
        let version = appended.version().unwrap_or(head_version);
        snapshot_if_due(self.tx.conn(), &stream, head_version, version, &aggregate).await?;
        let cursor = appended.cursor();
        if cursor.is_some() {
            self.last = cursor;
        }
        let (state, account_id) = (aggregate.clone(), self.ctx.account_id);
        self.committed_states.push(Box::new(move |cache: &AggregateCache| {
            cache.put(stream, version, account_id, cursor, state)
        }));
        Ok(Executed { aggregate, events, appended: appended.events, version, cursor })
    }

    /// Rolls back now, so locks (stream, idempotency key) are released before the caller goes on.
    pub async fn rollback(self) {
        if let Err(e) = self.tx.rollback().await {
            tracing::warn!(error = %e, "rollback failed; the connection is discarded");
        }
    }

    /// Commits; returns the cursor of the last event appended, if any.
    pub async fn commit(self) -> Result<Option<LogCursor>, DispatchError> {
        self.tx.commit().await?;
        for remember in self.committed_states {
            remember(&self.cache);
        }
        metrics::histogram!("parley_command_duration_seconds", "aggregate" => self.label)
            .record(self.started.elapsed().as_secs_f64());
        Ok(self.last)
    }
}
