//! The dispatcher: runs commands on aggregates inside one short write transaction each.

use std::future::Future;
use std::time::Instant;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use parley_aggregates::{from_payload, to_payload};
use parley_eventstore::idempotency::{self, IdempotencyCheck, IdempotencyKey, StoredResponse};
use parley_eventstore::snapshots::{self, Snapshot};
use parley_eventstore::{
    AppendedEvent, EventStore, LogCursor, Metadata, NewEvent, StoreTransaction, StreamAppend, StreamHead,
    StreamKey,
};
use sqlx::PgConnection;

use crate::context::CommandContext;
use crate::error::DispatchError;
use crate::write_side::WriteSide;

/// How often a re-decidable command is tried before its conflict is reported.
const MAX_ATTEMPTS: usize = 8;

/// Runs commands. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    store: EventStore,
}

impl Dispatcher {
    pub fn new(store: EventStore) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Opens a unit of work: one transaction in which several aggregates may be changed.
    pub async fn begin(&self, ctx: &CommandContext) -> Result<UnitOfWork, DispatchError> {
        Ok(UnitOfWork {
            tx: self.store.begin().await?,
            ctx: ctx.clone(),
            metadata: ctx.metadata(),
            last: None,
            started: Instant::now(),
            label: "unknown",
        })
    }

    /// Runs one command on one aggregate in its own transaction. The command is decided anew
    /// when a concurrent writer forces a retry, so re-decidable commands never fail for that.
    #[tracing::instrument(skip_all, fields(aggregate = A::TYPE, stream_id))]
    pub async fn execute<A: WriteSide>(
        &self,
        ctx: &CommandContext,
        stream_id: &str,
        command: A::Command,
    ) -> Result<Executed<A>, DispatchError> {
        with_retry(|| async {
            let mut uow = self.begin(ctx).await?;
            let executed = uow.execute::<A>(stream_id, command.clone()).await?;
            uow.commit().await?;
            Ok(executed)
        })
        .await
    }
}

/// The answer to a command sent with an idempotency key.
#[derive(Debug)]
pub enum Idempotent<A: Aggregate> {
    /// Run now; its response is stored with its events.
    Fresh(Executed<A>, StoredResponse),
    /// Run before with the same body: the stored response, nothing written.
    Replayed(StoredResponse),
}

impl Dispatcher {
    /// Runs one command under an idempotency key: the response `render` makes of the outcome is
    /// stored in the command's own transaction, so a retried request gets it back and appends
    /// nothing; the same key with another body, or while the first still runs, is refused.
    pub async fn execute_idempotent<A: WriteSide>(
        &self,
        ctx: &CommandContext,
        stream_id: &str,
        command: A::Command,
        key: &IdempotencyKey,
        render: impl Fn(&Executed<A>) -> StoredResponse,
    ) -> Result<Idempotent<A>, DispatchError> {
        with_retry(|| async {
            let mut uow = self.begin(ctx).await?;
            match uow.check_idempotency(key).await? {
                IdempotencyCheck::New => {}
                IdempotencyCheck::Replay(stored) => return Ok(Idempotent::Replayed(stored)),
                IdempotencyCheck::Mismatch => return Err(DispatchError::IdempotencyKeyReused),
                IdempotencyCheck::InProgress => return Err(DispatchError::IdempotencyInProgress),
            }
            let executed = uow.execute::<A>(stream_id, command.clone()).await?;
            let response = render(&executed);
            uow.record_idempotency(key, &response).await?;
            uow.commit().await?;
            Ok(Idempotent::Fresh(executed, response))
        })
        .await
    }
}

/// Tries `attempt` again (in a fresh transaction) while it fails with a retryable conflict.
pub async fn with_retry<T, F, Fut>(mut attempt: F) -> Result<T, DispatchError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DispatchError>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e) if e.is_retryable() && tries < MAX_ATTEMPTS => {
                tries += 1;
                metrics::counter!("parley_command_retries_total").increment(1);
                tracing::debug!(error = %e, tries, "retrying command");
            }
            result => return result,
        }
    }
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

/// One write transaction. Dropping it without [`UnitOfWork::commit`] rolls everything back.
pub struct UnitOfWork {
    tx: StoreTransaction,
    ctx: CommandContext,
    metadata: Metadata,
    last: Option<LogCursor>,
    started: Instant,
    label: &'static str,
}

impl UnitOfWork {
    pub fn context(&self) -> &CommandContext {
        &self.ctx
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
        let mut aggregate = A::default();
        let mut from = 0;
        if A::SNAPSHOT_EVERY > 0 && head.version > 0 {
            if let Some(snapshot) = snapshots::load(self.tx.conn(), &stream, A::STATE_VERSION).await? {
                if let (true, Ok(state)) =
                    (snapshot.version <= head.version, serde_json::from_value(snapshot.state))
                {
                    aggregate = state;
                    from = snapshot.version;
                }
            }
        }
        if head.version > from {
            for event in self.tx.read_stream(&stream, from).await? {
                aggregate.apply(from_payload(&event.event_type, &event.payload)?);
            }
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
        let (mut aggregate, head) = self.load::<A>(stream_id).await?;
        let sink = EventSink::default();
        aggregate.handle(command, &(), &sink).await.map_err(|e| DispatchError::Domain(e.into()))?;
        let events = sink.collect().await;
        if events.is_empty() {
            return Ok(Executed {
                aggregate,
                events,
                appended: Vec::new(),
                version: head.version,
                cursor: head.cursor,
            });
        }
        let mut new_events = Vec::with_capacity(events.len());
        for event in &events {
            let (event_type, payload) = to_payload(event)?;
            let schema_version = event.event_version().parse().unwrap_or(1);
            new_events.push(NewEvent::new(event_type, schema_version, payload));
        }
        let stream = StreamKey::new(A::TYPE, stream_id);
        let appended = self
            .tx
            .append(&StreamAppend {
                account_id: self.ctx.account_id,
                stream: stream.clone(),
                expected_version: head.version,
                events: new_events,
                metadata: self.metadata.clone(),
            })
            .await?;
        A::write_side(self.tx.conn(), self.ctx.account_id, &stream, &events).await?;
        let version = appended.version().unwrap_or(head.version);
        if A::SNAPSHOT_EVERY > 0 && version / A::SNAPSHOT_EVERY > head.version / A::SNAPSHOT_EVERY {
            let state = serde_json::to_value(&aggregate)
                .map_err(|e| parley_aggregates::PayloadError::Shape(e.to_string()))?;
            snapshots::save(self.tx.conn(), &stream, A::STATE_VERSION, &Snapshot { version, state }).await?;
        }
        let cursor = appended.cursor();
        if cursor.is_some() {
            self.last = cursor;
        }
        Ok(Executed { aggregate, events, appended: appended.events, version, cursor })
    }

    /// Commits; returns the cursor of the last event appended, if any.
    pub async fn commit(self) -> Result<Option<LogCursor>, DispatchError> {
        self.tx.commit().await?;
        metrics::histogram!("parley_command_duration_seconds", "aggregate" => self.label)
            .record(self.started.elapsed().as_secs_f64());
        Ok(self.last)
    }
}
