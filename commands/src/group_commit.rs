//! Group commit: concurrent commands on one kind of aggregate, each decided on its own and
//! committed together in one transaction.
//!
//! Under load, most of what a command costs is its transaction (BEGIN, the lock, COMMIT with its
//! WAL flush, the round trips), not its decision. So a node queues re-decidable commands
//! (posting a message), and a worker takes everything queued, decides each command on the latest
//! state of its stream (the cache, else a read), and appends all of their events in one
//! transaction: the streams locked together first (sorted, like any multi-stream unit of work),
//! then each command's append checking its expected version as always, with its write-side rows
//! and snapshot. Every command keeps its own events, metadata and answer.
//!
//! A command is committed in a group only when it decided events there. One that was refused,
//! or decided nothing, runs alone through the dispatcher, which decides it again on the state
//! under the stream's lock (a refusal on a stale cached state must not stand). If the group's
//! transaction fails, nothing of it is kept. When a state had gone stale (another node wrote to
//! one of its streams: on several nodes posting to the same conversations, the common case), the
//! group is decided once more on states read afresh and committed again; otherwise (or when that
//! fails too) each of its commands runs alone, with the dispatcher's retries: a group never makes
//! a command fail that would have succeeded alone.
//!
//! Commands are spread over a few workers by stream, so one stream's commands are always in one
//! worker's queue, in arrival order, and two groups of this node never contend for a stream.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;
use std::time::Instant;

use parley_eventstore::{Appended, StreamAppend, StreamKey};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;

use crate::context::CommandContext;
use crate::dispatcher::Dispatcher;
use crate::error::DispatchError;
use crate::unit_of_work::{decide, snapshot_if_due, to_new_events, Executed};
use crate::write_side::WriteSide;

/// Workers per aggregate type: groups committing at the same time.
const WORKERS: usize = 4;
/// Commands in one group at most.
const MAX_GROUP: usize = 64;
/// Times a group is decided and committed before its commands run alone: a second time on
/// fresh states when another node made a stream's cached state stale.
const GROUP_ATTEMPTS: usize = 2;
/// Commands waiting per worker before senders wait too.
const QUEUE: usize = 1024;

/// Commits concurrent commands on aggregates of type `A` in groups. Cheap to clone; the workers
/// start with the first command and stop when the last clone is dropped.
#[derive(Clone)]
pub struct GroupCommit<A: WriteSide> {
    dispatcher: Dispatcher,
    queues: std::sync::Arc<OnceLock<Vec<mpsc::Sender<Job<A>>>>>,
}

struct Job<A: WriteSide> {
    ctx: CommandContext,
    stream_id: String,
    command: A::Command,
    queued: Instant,
    span: tracing::Span,
    reply: oneshot::Sender<Result<Executed<A>, DispatchError>>,
}

impl<A: WriteSide> GroupCommit<A> {
    pub fn new(dispatcher: Dispatcher) -> Self {
        Self { dispatcher, queues: Default::default() }
    }

    /// Runs `command` on the aggregate with id `stream_id`, committed in a group with whatever
    /// else is queued; the same outcome as [`Dispatcher::execute`].
    pub async fn execute(
        &self,
        ctx: &CommandContext,
        stream_id: &str,
        command: A::Command,
    ) -> Result<Executed<A>, DispatchError> {
        let queues = self.queues.get_or_init(|| {
            (0..WORKERS)
                .map(|_| {
                    let (sender, receiver) = mpsc::channel(QUEUE);
                    tokio::spawn(worker(self.dispatcher.clone(), receiver));
                    sender
                })
                .collect()
        });
        let mut hasher = DefaultHasher::new();
        stream_id.hash(&mut hasher);
        let queue = &queues[hasher.finish() as usize % queues.len()];
        let (reply, answer) = oneshot::channel();
        let job = Job {
            ctx: ctx.clone(),
            stream_id: stream_id.to_owned(),
            command,
            queued: Instant::now(),
            span: tracing::Span::current(),
            reply,
        };
        if let Err(mpsc::error::SendError(job)) = queue.send(job).await {
            // No worker (its runtime is shutting down): nothing ran, so run it here.
            return self.dispatcher.execute::<A>(&job.ctx, &job.stream_id, job.command).await;
        }
        answer.await.map_err(|_| DispatchError::Unavailable("the command worker stopped"))?
    }
}

async fn worker<A: WriteSide>(dispatcher: Dispatcher, mut queue: mpsc::Receiver<Job<A>>) {
    loop {
        let mut group = Vec::with_capacity(MAX_GROUP);
        if queue.recv_many(&mut group, MAX_GROUP).await == 0 {
            return;
        }
        let span = tracing::info_span!("command_group", aggregate = A::TYPE, commands = group.len());
        commit_group(&dispatcher, group).instrument(span).await;
    }
}

/// What the group knows of a stream: the state to decide the next command on.
struct Head<A> {
    state: A,
    version: i64,
    account_id: Option<Uuid>,
}

/// A command that decided events, waiting for the group's commit.
struct Decided<A: WriteSide> {
    job: Job<A>,
    append: StreamAppend,
    events: Vec<A::Event>,
    aggregate: A,
}

async fn commit_group<A: WriteSide>(dispatcher: &Dispatcher, jobs: Vec<Job<A>>) {
    metrics::histogram!("parley_command_group_size", "aggregate" => A::TYPE).record(jobs.len() as f64);
    let mut jobs = jobs;
    for attempt in 1..=GROUP_ATTEMPTS {
        let decided = decide_all(dispatcher, jobs).await;
        if decided.is_empty() {
            return;
        }
        match append_group(dispatcher, &decided).await {
            Ok(appended) => {
                answer(dispatcher, decided, appended);
                return;
            }
            // The database is away: running each alone would only wait for it again.
            Err(DispatchError::Store(e)) if e.is_unavailable() => {
                tracing::warn!(error = %e, commands = decided.len(), "group commit failed: the database is unavailable");
                for d in decided {
                    dispatcher.cache.forget(&d.append.stream);
                    let _ = d.job.reply.send(Err(DispatchError::Unavailable("the database is unavailable")));
                }
                return;
            }
            // A state gone stale (another node wrote to one of the streams): decide the group
            // again on fresh states, read past the cache.
            Err(e) if e.is_retryable() && attempt < GROUP_ATTEMPTS => {
                tracing::debug!(error = %e, commands = decided.len(), "group commit on a stale state; deciding again");
                metrics::counter!("parley_command_group_retries_total", "aggregate" => A::TYPE).increment(1);
                jobs = decided
                    .into_iter()
                    .map(|d| {
                        dispatcher.cache.forget(&d.append.stream);
                        d.job
                    })
                    .collect();
            }
            Err(e) => {
                tracing::debug!(error = %e, commands = decided.len(), "group commit failed; running its commands alone");
                metrics::counter!("parley_command_group_fallbacks_total", "aggregate" => A::TYPE)
                    .increment(1);
                for d in decided {
                    dispatcher.cache.forget(&d.append.stream);
                    alone(dispatcher, d.job);
                }
                return;
            }
        }
    }
}

/// Decides every job on the latest known state of its stream, in arrival order (each on the
/// state its predecessors in the group left). Jobs that decided nothing, or were refused, run
/// alone; a job whose stream could not be read is told so.
async fn decide_all<A: WriteSide>(dispatcher: &Dispatcher, jobs: Vec<Job<A>>) -> Vec<Decided<A>> {
    let mut heads = latest_of_all(dispatcher, &jobs).await;
    let mut decided: Vec<Decided<A>> = Vec::with_capacity(jobs.len());
    for job in jobs {
        let stream = StreamKey::new(A::TYPE, &job.stream_id);
        if heads.get(&stream).is_some_and(Result::is_err) {
            // The read failed: this command is told; any other of the stream runs alone.
            if let Some(Err(e)) = heads.remove(&stream) {
                let _ = job.reply.send(Err(e));
            }
            continue;
        }
        let Some(Ok(head)) = heads.get_mut(&stream) else {
            alone(dispatcher, job);
            continue;
        };
        if head.account_id.is_some_and(|a| a != job.ctx.account_id) {
            // A stream's account never changes: this answer does not depend on the version.
            let _ = job.reply.send(Err(DispatchError::NotFound(A::TYPE)));
            continue;
        }
        let outcome =
            decide(head.state.clone(), job.command.clone()).await.and_then(|(aggregate, events)| {
                let new_events = to_new_events(&events)?;
                Ok((aggregate, events, new_events))
            });
        match outcome {
            Ok((aggregate, events, new_events)) if !events.is_empty() => {
                let append = StreamAppend {
                    account_id: job.ctx.account_id,
                    stream,
                    expected_version: head.version,
                    metadata: job.ctx.metadata(),
                    events: new_events,
                };
                *head = Head {
                    state: aggregate.clone(),
                    version: head.version + events.len() as i64,
                    account_id: Some(job.ctx.account_id),
                };
                decided.push(Decided { job, append, events, aggregate });
            }
            _ => alone(dispatcher, job),
        }
    }
    decided
}

/// Tells each command of a committed group its outcome, and caches the states it left.
fn answer<A: WriteSide>(dispatcher: &Dispatcher, decided: Vec<Decided<A>>, appended: Vec<Appended>) {
    for (d, appended) in decided.into_iter().zip(appended) {
        let version = appended.version().unwrap_or(d.append.expected_version);
        let cursor = appended.cursor();
        dispatcher.cache.put(
            d.append.stream.clone(),
            version,
            d.append.account_id,
            cursor,
            d.aggregate.clone(),
        );
        metrics::histogram!("parley_command_duration_seconds", "aggregate" => A::TYPE)
            .record(d.job.queued.elapsed().as_secs_f64());
        let executed =
            Executed { aggregate: d.aggregate, events: d.events, appended: appended.events, version, cursor };
        let _ = d.job.reply.send(Ok(executed));
    }
}

/// The latest known state of every stream of `jobs`, read at once: the cache's, else read
/// outside any transaction, the reads of different streams concurrently (on fresh or cold
/// streams, one read after another would make the worker, not the commit, the bottleneck).
async fn latest_of_all<A: WriteSide>(
    dispatcher: &Dispatcher,
    jobs: &[Job<A>],
) -> HashMap<StreamKey, Result<Head<A>, DispatchError>> {
    let mut streams: Vec<StreamKey> = jobs.iter().map(|j| StreamKey::new(A::TYPE, &j.stream_id)).collect();
    streams.sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
    streams.dedup();
    let heads = futures::future::join_all(streams.iter().map(|s| latest::<A>(dispatcher, s))).await;
    streams.into_iter().zip(heads).collect()
}

/// The latest known state of a stream: the cache's, else read outside any transaction (the
/// append checks the version under the lock either way).
async fn latest<A: WriteSide>(dispatcher: &Dispatcher, stream: &StreamKey) -> Result<Head<A>, DispatchError> {
    if let Some(latest) = dispatcher.cache.latest::<A>(stream) {
        return Ok(Head {
            state: latest.state,
            version: latest.version,
            account_id: Some(latest.account_id),
        });
    }
    Ok(match dispatcher.load::<A>(&stream.stream_id).await? {
        Some(loaded) => {
            Head { state: loaded.aggregate, version: loaded.version, account_id: Some(loaded.account_id) }
        }
        None => Head { state: A::default(), version: 0, account_id: None },
    })
}

/// Runs a command on its own, beside the worker so that it does not hold up the next group.
fn alone<A: WriteSide>(dispatcher: &Dispatcher, job: Job<A>) {
    let dispatcher = dispatcher.clone();
    let span = job.span.clone();
    tokio::spawn(
        async move {
            let outcome = dispatcher.execute::<A>(&job.ctx, &job.stream_id, job.command).await;
            let _ = job.reply.send(outcome);
        }
        .instrument(span),
    );
}

/// One transaction for the whole group: every stream locked first, then each command's
/// append, write-side rows and snapshot.
async fn append_group<A: WriteSide>(
    dispatcher: &Dispatcher,
    decided: &[Decided<A>],
) -> Result<Vec<Appended>, DispatchError> {
    let mut tx = dispatcher.store.begin().await?;
    let written: Result<Vec<Appended>, DispatchError> = async {
        let streams: Vec<StreamKey> = decided.iter().map(|d| d.append.stream.clone()).collect();
        tx.lock_streams(&streams).await?;
        let appends: Vec<&StreamAppend> = decided.iter().map(|d| &d.append).collect();
        let appended = tx.append_all(&appends).await?;
        let written: Vec<_> =
            decided.iter().map(|d| (d.append.account_id, &d.append.stream, d.events.as_slice())).collect();
        A::write_side_all(tx.conn(), &written).await?;
        for (d, done) in decided.iter().zip(&appended) {
            let after = done.version().unwrap_or(d.append.expected_version);
            snapshot_if_due(tx.conn(), &d.append.stream, d.append.expected_version, after, &d.aggregate)
                .await?;
        }
        Ok(appended)
    }
    .await;
    match written {
        Ok(appended) => {
            tx.commit().await?;
            Ok(appended)
        }
        Err(e) => {
            // Now, so that the commands run alone do not wait for these locks.
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "rollback failed; the connection is discarded");
            }
            Err(e)
        }
    }
}
