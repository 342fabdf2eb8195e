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
//! One worker per aggregate type takes the commands in arrival order. While a group waits for
//! its commit (most of it the WAL flush), the worker decides and appends the next groups, up to
//! [`IN_FLIGHT`] at once: a group deciding on a stream that a group in flight wrote decides on
//! the state that group left (its append then waits for that group's stream locks, and fails
//! its version check, to be decided again, if that group did not commit). Commands arriving
//! while every slot is busy wait in the queue and form the next group, so groups grow with the
//! load: one command alone when it is light, dozens per transaction when it is heavy.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use futures::future::BoxFuture;
use parley_eventstore::{Appended, StreamAppend};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tracing::Instrument;

use crate::context::CommandContext;
use crate::dispatcher::Dispatcher;
use crate::error::DispatchError;
use crate::unit_of_work::{snapshot_due, snapshot_if_due, Executed};
use crate::write_side::WriteSide;

mod decide;

use decide::{decide_all, Decided, InFlight};

/// Groups of one aggregate type appended and committing at the same time (measured: two beat
/// one, which leaves the worker idle during each commit, and four, which split the load into
/// smaller groups that each wait for a WAL flush).
const IN_FLIGHT: usize = 2;
/// Times the worker yields at most to let answered senders join the group it is forming.
const GATHER_YIELDS: usize = 8;
/// Commands in one group at most.
const MAX_GROUP: usize = 64;
/// Times a group is decided and committed before its commands run alone: again on fresh states
/// when another node, or a command of this one running alone (one put after a group, say), made
/// a stream's state stale. Each attempt after the first reads only the events after the states
/// held; running the group's commands alone is a locked transaction each. With two, a group of
/// first edits racing the second edits of the same messages (which run alone) fell back to
/// running alone in about one run in six of the edits test; with four, in none of twenty.
const GROUP_ATTEMPTS: usize = 4;
/// Commands waiting before senders wait too.
const QUEUE: usize = 4096;

/// Commits concurrent commands on aggregates of type `A` in groups. Cheap to clone; the workers
/// start with the first command and stop when the last clone is dropped.
#[derive(Clone)]
pub struct GroupCommit<A: WriteSide> {
    dispatcher: Dispatcher,
    queue: Arc<OnceLock<mpsc::Sender<Job<A>>>>,
}

/// How a command that cannot be committed in its group runs alone (by default, through the
/// dispatcher): for a command built from facts read before the group, one that reads them again
/// under the stream's lock.
pub type Alone<A> = Box<dyn FnOnce() -> BoxFuture<'static, Result<Executed<A>, DispatchError>> + Send + Sync>;

struct Job<A: WriteSide> {
    ctx: CommandContext,
    stream_id: String,
    command: A::Command,
    alone: Option<Alone<A>>,
    queued: Instant,
    span: tracing::Span,
    reply: oneshot::Sender<Result<Executed<A>, DispatchError>>,
}

impl<A: WriteSide> GroupCommit<A> {
    pub fn new(dispatcher: Dispatcher) -> Self {
        Self { dispatcher, queue: Default::default() }
    }

    /// Runs `command` on the aggregate with id `stream_id`, committed in a group with whatever
    /// else is queued; the same outcome as [`Dispatcher::execute`].
    pub async fn execute(
        &self,
        ctx: &CommandContext,
        stream_id: &str,
        command: A::Command,
    ) -> Result<Executed<A>, DispatchError> {
        self.execute_or(ctx, stream_id, command, None).await
    }

    /// [`GroupCommit::execute`], running `alone` instead of the dispatcher when the command
    /// cannot be committed in its group (it was refused there, decided nothing, would write the
    /// same unique row as another command of the group, or its group failed).
    pub async fn execute_or(
        &self,
        ctx: &CommandContext,
        stream_id: &str,
        command: A::Command,
        alone: Option<Alone<A>>,
    ) -> Result<Executed<A>, DispatchError> {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(QUEUE);
            tokio::spawn(worker(self.dispatcher.clone(), receiver));
            sender
        });
        let (reply, answer) = oneshot::channel();
        let job = Job {
            ctx: ctx.clone(),
            stream_id: stream_id.to_owned(),
            command,
            alone,
            queued: Instant::now(),
            span: tracing::Span::current(),
            reply,
        };
        if let Err(mpsc::error::SendError(job)) = queue.send(job).await {
            // No worker (its runtime is shutting down): nothing ran, so run it here.
            return run_alone(&self.dispatcher, job.ctx, job.stream_id, job.command, job.alone).await;
        }
        answer.await.map_err(|_| DispatchError::Unavailable("the command worker stopped"))?
    }
}

async fn worker<A: WriteSide>(dispatcher: Dispatcher, mut queue: mpsc::Receiver<Job<A>>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let appended = Arc::new(watch::Sender::new(0u64));
    let in_flight: Arc<InFlight<A>> = Arc::default();
    for id in 1u64.. {
        // A free slot first: meanwhile, what arrives waits in the queue for this group.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut group = Vec::with_capacity(MAX_GROUP);
        if queue.recv_many(&mut group, MAX_GROUP).await == 0 {
            return;
        }
        gather(&mut queue, &mut group).await;
        let span = tracing::info_span!("command_group", aggregate = A::TYPE, commands = group.len());
        metrics::histogram!("parley_command_group_size", "aggregate" => A::TYPE).record(group.len() as f64);
        let mut after = Vec::new();
        let decided =
            decide_all(&dispatcher, group, Some((&in_flight, id)), &mut after).instrument(span.clone()).await;
        let (dispatcher, in_flight) = (dispatcher.clone(), in_flight.clone());
        let turn = Turn { appended: appended.clone(), id };
        tokio::spawn(
            async move {
                turn.wait().await;
                commit_group(&dispatcher, decided, &mut after, &turn).await;
                turn.done();
                in_flight.landed(id);
                drop(slot);
                // The commands that would have written a unique row of this group's (or of
                // one in flight before it) decide alone now, on what it left.
                for job in after {
                    alone(&dispatcher, job);
                }
            }
            .instrument(span),
        );
    }
}

/// A group's turn to append: after the group before it appended (its statement took its
/// streams' locks), so that a group decided on the states the one before it left never reaches
/// the database first, to find those states not there yet.
struct Turn {
    /// The id of the last group whose append returned.
    appended: Arc<watch::Sender<u64>>,
    id: u64,
}

impl Turn {
    async fn wait(&self) {
        let mut appended = self.appended.subscribe();
        let _ = appended.wait_for(|last| *last + 1 >= self.id).await;
    }

    /// This group appended, or will not.
    fn done(&self) {
        self.appended.send_if_modified(|last| {
            let later = *last < self.id;
            if later {
                *last = self.id;
            }
            later
        });
    }
}

/// Lets the tasks that were just woken queue their commands before the group closes: when a
/// group commits, its senders are answered together and most send their next command at once,
/// but they run only when the worker yields. Without this, a steady load splits into two halves
/// that take turns, each waiting for the other's commit. Yields while a yield brings more
/// commands, a few times at most; under a light load, one yield that brings nothing.
async fn gather<A: WriteSide>(queue: &mut mpsc::Receiver<Job<A>>, group: &mut Vec<Job<A>>) {
    for _ in 0..GATHER_YIELDS {
        if group.len() >= MAX_GROUP {
            return;
        }
        tokio::task::yield_now().await;
        let before = group.len();
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        if group.len() == before {
            return;
        }
    }
}

/// Commits a group decided by the worker; decides it again on fresh states (once) when one of
/// them was stale (commands put `after` the group then run once it landed).
async fn commit_group<A: WriteSide>(
    dispatcher: &Dispatcher,
    decided: Vec<Decided<A>>,
    after: &mut Vec<Job<A>>,
    turn: &Turn,
) {
    let mut decided = decided;
    for attempt in 1..=GROUP_ATTEMPTS {
        if attempt > 1 {
            let jobs = decided.into_iter().map(|d| d.job).collect();
            decided = decide_all(dispatcher, jobs, None, after).await;
        }
        if decided.is_empty() {
            return;
        }
        match append_group(dispatcher, &decided, turn).await {
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
            // again, on every stream's state brought up to date.
            Err(e) if e.is_retryable() && attempt < GROUP_ATTEMPTS => {
                dispatcher.refused_stale();
                tracing::debug!(error = %e, commands = decided.len(), "group commit on a stale state; deciding again");
                metrics::counter!("parley_command_group_retries_total", "aggregate" => A::TYPE).increment(1);
                // The cached states stay: each is a committed state, which the next decision
                // brings up to date by reading only the events after it.
            }
            Err(e) => {
                if e.is_retryable() {
                    dispatcher.refused_stale();
                }
                tracing::debug!(error = %e, commands = decided.len(), "group commit failed; running its commands alone");
                metrics::counter!("parley_command_group_fallbacks_total", "aggregate" => A::TYPE)
                    .increment(1);
                for d in decided {
                    alone(dispatcher, d.job);
                }
                return;
            }
        }
    }
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

/// Runs a command on its own, beside the worker so that it does not hold up the next group.
fn alone<A: WriteSide>(dispatcher: &Dispatcher, job: Job<A>) {
    let dispatcher = dispatcher.clone();
    let span = job.span.clone();
    tokio::spawn(
        async move {
            let outcome = run_alone(&dispatcher, job.ctx, job.stream_id, job.command, job.alone).await;
            let _ = job.reply.send(outcome);
        }
        .instrument(span),
    );
}

async fn run_alone<A: WriteSide>(
    dispatcher: &Dispatcher,
    ctx: CommandContext,
    stream_id: String,
    command: A::Command,
    alone: Option<Alone<A>>,
) -> Result<Executed<A>, DispatchError> {
    match alone {
        Some(alone) => alone().await,
        None => dispatcher.execute::<A>(&ctx, &stream_id, command).await,
    }
}

/// One transaction for the whole group: every command's events appended by one statement (which
/// locks all their streams first, sorted), then their write-side rows and snapshots. A group
/// that only starts streams is one autocommit `INSERT` ([`parley_eventstore::EventStore::start_streams`]).
async fn append_group<A: WriteSide>(
    dispatcher: &Dispatcher,
    decided: &[Decided<A>],
    turn: &Turn,
) -> Result<Vec<Appended>, DispatchError> {
    if decided.iter().all(|d| {
        d.append.expected_version == 0
            && d.after_event.is_none()
            && !A::writes_rows(&d.events)
            && !snapshot_due::<A>(0, d.events.len() as i64)
    }) {
        // Only new streams and nothing else to write: one autocommit statement, which takes no
        // locks, so the next group need not wait for it (its commit included). A later group
        // decided on a stream this one starts may then reach the database first: its append
        // finds no head, and it is decided again, as on any stale state.
        let appends: Vec<&StreamAppend> = decided.iter().map(|d| &d.append).collect();
        turn.done();
        return Ok(dispatcher.store.start_streams(&appends).await?);
    }
    let mut tx = dispatcher.store.begin().await?;
    let written: Result<Vec<Appended>, DispatchError> = async {
        let appends: Vec<&StreamAppend> = decided.iter().map(|d| &d.append).collect();
        let heads: Vec<_> = decided.iter().map(|d| d.after_event).collect();
        let appended = tx.append_all_after(&appends, &heads).await;
        turn.done();
        let appended = appended?;
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
