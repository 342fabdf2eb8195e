//! The dispatcher: runs commands on aggregates, each in one short unit of work, retried on
//! conflicts, under an optional idempotency key.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parley_eventstore::idempotency::{IdempotencyCheck, IdempotencyKey, StoredResponse};
use parley_eventstore::{EventStore, StoreError, StreamAppend, StreamKey};

use crate::cache::AggregateCache;
use crate::context::CommandContext;
use crate::error::DispatchError;
use crate::unit_of_work::{
    apply_events, decide_assumed, from_snapshot, snapshot_due, to_new_events, Assumed, Executed, UnitOfWork,
};
use crate::write_side::WriteSide;

/// How often a re-decidable command is tried before its conflict is reported.
const MAX_ATTEMPTS: usize = 8;

/// Runs commands. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    pub(crate) store: EventStore,
    pub(crate) cache: Arc<AggregateCache>,
    /// Commands appended by one autocommit statement, since this dispatcher was made.
    one_statement: Arc<AtomicU64>,
    /// Appends refused because the state they were decided on was stale, since it was made.
    stale: Arc<AtomicU64>,
}

impl Dispatcher {
    pub fn new(store: EventStore) -> Self {
        let cache: Arc<AggregateCache> = Arc::default();
        // On a node that reads the log, the cache learns which of its states others moved on.
        store.observe_log(&(cache.clone() as Arc<dyn parley_eventstore::LogObserver>));
        Self { store, cache, one_statement: Arc::default(), stale: Arc::default() }
    }

    /// How many commands this dispatcher (and its clones) appended by one autocommit statement,
    /// without a transaction (see [`Dispatcher::execute`]).
    pub fn one_statement_commands(&self) -> u64 {
        self.one_statement.load(Ordering::Relaxed)
    }

    /// How many appends of this dispatcher (and its clones, and its group commits) the database
    /// refused because the state they were decided on was stale: each cost a decision again.
    pub fn stale_appends(&self) -> u64 {
        self.stale.load(Ordering::Relaxed)
    }

    /// Counts an append refused on a stale state.
    pub(crate) fn refused_stale(&self) {
        self.stale.fetch_add(1, Ordering::Relaxed);
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// The current state of an aggregate outside any transaction (for decisions on reads, such
    /// as checking credentials or a WebSocket subscription), from its snapshot and the events
    /// after it. `None` when the stream has no events.
    pub async fn load<A: WriteSide>(&self, stream_id: &str) -> Result<Option<Loaded<A>>, DispatchError> {
        let stream = StreamKey::new(A::TYPE, stream_id);
        let mut conn = self.store.pool().acquire().await.map_err(StoreError::from)?;
        let (mut aggregate, from) = from_snapshot::<A>(&mut conn, &stream, None).await?;
        drop(conn);
        let events = self.store.read_stream(&stream, from, None).await?;
        let account: Option<(uuid::Uuid, i64)> = match events.last() {
            Some(e) => Some((e.account_id, e.version)),
            None if from > 0 => {
                sqlx::query_as(
                    "SELECT account_id, version FROM events WHERE stream_type = $1 AND stream_id = $2 \
                 ORDER BY version DESC LIMIT 1",
                )
                .bind(&stream.stream_type)
                .bind(&stream.stream_id)
                .fetch_optional(self.store.pool())
                .await?
            }
            None => None,
        };
        let Some((account_id, version)) = account else { return Ok(None) };
        apply_events(&mut aggregate, &events)?;
        Ok(Some(Loaded { aggregate, account_id, version }))
    }

    /// Opens a unit of work: one transaction in which several aggregates may be changed.
    pub async fn begin(&self, ctx: &CommandContext) -> Result<UnitOfWork, DispatchError> {
        Ok(UnitOfWork::new(self.store.begin().await?, self.cache.clone(), ctx))
    }

    /// Runs one command on one aggregate in its own transaction, or, when it is decided on state
    /// held without reading and needs no write-side rows, by one autocommit statement. The
    /// command is decided anew when a concurrent writer forces a retry, so re-decidable
    /// commands never fail for that.
    #[tracing::instrument(skip_all, fields(aggregate = A::TYPE, stream_id))]
    pub async fn execute<A: WriteSide>(
        &self,
        ctx: &CommandContext,
        stream_id: &str,
        command: A::Command,
    ) -> Result<Executed<A>, DispatchError> {
        self.execute_expecting::<A>(ctx, stream_id, command, None).await
    }

    /// [`Dispatcher::execute`], only if the stream is at `expected_version` when given (a
    /// client's `If-Match`); else `PreconditionFailed` with the current version.
    pub async fn execute_expecting<A: WriteSide>(
        &self,
        ctx: &CommandContext,
        stream_id: &str,
        command: A::Command,
        expected_version: Option<i64>,
    ) -> Result<Executed<A>, DispatchError> {
        let mut optimistic = true;
        if expected_version.is_none() {
            match self.execute_assumed::<A>(ctx, stream_id, &command).await? {
                OneStatement::Done(done) => return Ok(done),
                OneStatement::NotTaken => {}
                OneStatement::Stale => optimistic = false,
            }
        }
        let stream_id = stream_id.to_owned();
        let done = self
            .run(ctx, None, optimistic, move |uow| {
                let (stream_id, command) = (stream_id.clone(), command.clone());
                Box::pin(async move {
                    if let Some(expected) = expected_version {
                        let (_, head) = uow.load::<A>(&stream_id).await?;
                        if head.version != expected {
                            return Err(DispatchError::PreconditionFailed { current: head.version });
                        }
                    }
                    uow.execute::<A>(&stream_id, command).await
                })
            })
            .await?;
        done.fresh()
    }

    /// The one-statement path: a command decided on state held without reading the stream (see
    /// [`decide_assumed`]) whose events need no write-side rows and no snapshot is appended by
    /// one autocommit statement, which checks the stream's version under its lock: one round
    /// trip instead of a transaction's three.
    async fn execute_assumed<A: WriteSide>(
        &self,
        ctx: &CommandContext,
        stream_id: &str,
        command: &A::Command,
    ) -> Result<OneStatement<A>, DispatchError> {
        let started = Instant::now();
        let stream = StreamKey::new(A::TYPE, stream_id);
        let Some(Assumed { aggregate, events, version, cursor }) =
            decide_assumed::<A>(&self.cache, ctx, &stream, command).await?
        else {
            return Ok(OneStatement::NotTaken);
        };
        if events.is_empty() {
            return Ok(OneStatement::Done(Executed {
                aggregate,
                events,
                appended: Vec::new(),
                version,
                cursor,
            }));
        }
        if snapshot_due::<A>(version, version + events.len() as i64) || A::writes_rows(&events) {
            return Ok(OneStatement::NotTaken);
        }
        let append = StreamAppend {
            account_id: ctx.account_id,
            stream: stream.clone(),
            expected_version: version,
            events: to_new_events(&events)?,
            metadata: ctx.metadata(),
        };
        let appended = match self.store.append(&append).await {
            Ok(appended) => appended,
            Err(e) if e.is_retryable() => {
                self.refused_stale();
                return Ok(OneStatement::Stale);
            }
            Err(e) => return Err(e.into()),
        };
        let version = appended.version().unwrap_or(version);
        let cursor = appended.cursor();
        self.cache.put(stream, version, ctx.account_id, cursor, aggregate.clone());
        self.one_statement.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("parley_one_statement_commands_total", "aggregate" => A::TYPE).increment(1);
        metrics::histogram!("parley_command_duration_seconds", "aggregate" => A::TYPE)
            .record(started.elapsed().as_secs_f64());
        Ok(OneStatement::Done(Executed { aggregate, events, appended: appended.events, version, cursor }))
    }
}

/// What [`Dispatcher::execute_assumed`] did.
enum OneStatement<A: cqrs_es::Aggregate> {
    Done(Executed<A>),
    /// The path does not apply; a unit of work may still decide on the state held.
    NotTaken,
    /// The append found the state held stale (or met a transient error): the unit of work
    /// locks the stream before deciding.
    Stale,
}

/// The answer to a request sent with an idempotency key.
#[derive(Debug)]
pub enum Idempotent<T> {
    /// Run now; its response is stored with its events.
    Fresh(T),
    /// Run before with the same body: the stored response, nothing written.
    Replayed(StoredResponse),
}

impl<T> Idempotent<T> {
    /// The fresh outcome of work run without a key (which is never replayed).
    pub fn fresh(self) -> Result<T, DispatchError> {
        match self {
            Idempotent::Fresh(t) => Ok(t),
            Idempotent::Replayed(_) => Err(DispatchError::IdempotencyKeyReused),
        }
    }
}

/// An idempotency key with the renderings of what to store under it: the response to a success,
/// and, for errors that are the client's (4xx), the error response. Server errors are not stored.
pub struct Idempotency<'a, T> {
    pub key: &'a IdempotencyKey,
    pub render: &'a (dyn Fn(&T) -> StoredResponse + Send + Sync),
    pub render_error: &'a (dyn Fn(&DispatchError) -> Option<StoredResponse> + Send + Sync),
}

impl Dispatcher {
    /// Runs `work` in one unit of work, retried on conflicts, under an optional idempotency key:
    /// a key seen with the same body returns the stored response and writes nothing; with another
    /// body, or while its first request still runs, it is refused.
    pub async fn transact<T, F>(
        &self,
        ctx: &CommandContext,
        idempotency: Option<&Idempotency<'_, T>>,
        work: F,
    ) -> Result<Idempotent<T>, DispatchError>
    where
        F: for<'u> FnMut(&'u mut UnitOfWork) -> futures::future::BoxFuture<'u, Result<T, DispatchError>>,
    {
        self.run(ctx, idempotency, true, work).await
    }

    /// [`Dispatcher::transact`]; the first attempt decides on state held without reading only
    /// when `optimistic` (retries always lock first).
    async fn run<T, F>(
        &self,
        ctx: &CommandContext,
        idempotency: Option<&Idempotency<'_, T>>,
        optimistic: bool,
        mut work: F,
    ) -> Result<Idempotent<T>, DispatchError>
    where
        F: for<'u> FnMut(&'u mut UnitOfWork) -> futures::future::BoxFuture<'u, Result<T, DispatchError>>,
    {
        let key = idempotency.map(|i| i.key);
        let mut tries = 1;
        loop {
            let mut uow = self.begin(ctx).await?;
            uow.set_optimistic(optimistic && tries == 1);
            let outcome: Result<Idempotent<T>, DispatchError> = async {
                if let Some(stored) = uow.guard(key).await? {
                    return Ok(Idempotent::Replayed(stored));
                }
                let value = work(&mut uow).await?;
                if let Some(i) = idempotency {
                    uow.record_idempotency(i.key, &(i.render)(&value)).await?;
                }
                Ok(Idempotent::Fresh(value))
            }
            .await;
            let attempt = match outcome {
                Ok(outcome) => uow.commit().await.map(|_| outcome),
                Err(e) => {
                    uow.rollback().await;
                    Err(e)
                }
            };
            match attempt {
                Err(e) if e.is_retryable() && tries < MAX_ATTEMPTS => {
                    tries += 1;
                    self.refused_stale();
                    metrics::counter!("parley_command_retries_total").increment(1);
                }
                Err(e) => {
                    if let Some(stored) = idempotency.and_then(|i| (i.render_error)(&e).map(|r| (i.key, r))) {
                        self.record_failure(ctx, stored.0, &stored.1).await?;
                    }
                    return Err(e);
                }
                ok => return ok,
            }
        }
    }

    /// Stores a refused request's answer under its key, unless another request got there first.
    async fn record_failure(
        &self,
        ctx: &CommandContext,
        key: &IdempotencyKey,
        response: &StoredResponse,
    ) -> Result<(), DispatchError> {
        let mut uow = self.begin(ctx).await?;
        if let IdempotencyCheck::New = uow.check_idempotency(key).await? {
            uow.record_idempotency(key, response).await?;
            uow.commit().await?;
        }
        Ok(())
    }

    /// Runs one command on one aggregate under an optional idempotency key.
    pub async fn execute_with<A: WriteSide>(
        &self,
        ctx: &CommandContext,
        stream_id: &str,
        command: A::Command,
        idempotency: Option<&Idempotency<'_, Executed<A>>>,
    ) -> Result<Idempotent<Executed<A>>, DispatchError> {
        let stream_id = stream_id.to_owned();
        self.transact(ctx, idempotency, move |uow| {
            let (stream_id, command) = (stream_id.clone(), command.clone());
            Box::pin(async move { uow.execute::<A>(&stream_id, command).await })
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

/// An aggregate read outside a transaction, with the account its stream belongs to.
#[derive(Debug)]
pub struct Loaded<A> {
    pub aggregate: A,
    pub account_id: uuid::Uuid,
    pub version: i64,
}
