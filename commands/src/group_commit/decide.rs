//! Deciding a group: each command on the latest known state of its stream (the groups in
//! flight's, the cache's brought up to date, or read), each on the state its predecessors left.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use parley_eventstore::{StreamAppend, StreamKey};
use uuid::Uuid;

use super::{alone, Job};
use crate::dispatcher::Dispatcher;
use crate::error::DispatchError;
use crate::unit_of_work::{apply_events, decide, to_new_events};
use crate::write_side::WriteSide;

/// The states the groups in flight leave their streams in, each with the group's id: the
/// next group decides on them.
/// The unique rows they write, too, and those written by groups that landed lately.
pub(super) struct InFlight<A>(Mutex<Left<A>>);

struct Left<A> {
    heads: HashMap<StreamKey, (u64, Head<A>)>,
    unique_rows: HashMap<String, u64>,
    landed_rows: HashMap<String, Instant>,
    /// When `landed_rows` last lost its old rows (at most once a second: it may hold many).
    pruned: Instant,
}

/// How long before it was queued a command may have read the facts it was built from.
const READ_BEFORE_QUEUED: Duration = Duration::from_secs(1);
/// How long the unique rows of a landed group are remembered.
const LANDED_ROWS_KEPT: Duration = Duration::from_secs(10);

impl<A> Default for InFlight<A> {
    fn default() -> Self {
        Self(Mutex::new(Left {
            heads: HashMap::new(),
            unique_rows: HashMap::new(),
            landed_rows: HashMap::new(),
            pruned: Instant::now(),
        }))
    }
}

impl<A: Clone> InFlight<A> {
    fn head(&self, stream: &StreamKey) -> Option<Head<A>> {
        self.0.lock().ok()?.heads.get(stream).map(|(_, head)| head.clone())
    }

    fn leave(&self, group: u64, stream: StreamKey, head: Head<A>) {
        if let Ok(mut left) = self.0.lock() {
            left.heads.insert(stream, (group, head));
        }
    }

    /// Whether any of `rows` is written by a group in flight, or was by one that landed after
    /// `read`, when the command may have read its facts (so they may not show it).
    fn writes_any(&self, rows: &[String], read: Instant) -> bool {
        self.0.lock().is_ok_and(|left| {
            rows.iter().any(|row| {
                left.unique_rows.contains_key(row) || left.landed_rows.get(row).is_some_and(|at| *at >= read)
            })
        })
    }

    fn write(&self, group: u64, rows: &[String]) {
        if let Ok(mut left) = self.0.lock() {
            left.unique_rows.extend(rows.iter().map(|row| (row.clone(), group)));
        }
    }

    /// The group committed (its states are cached) or failed: what it left is no longer news.
    pub(super) fn landed(&self, group: u64) {
        let Ok(mut left) = self.0.lock() else { return };
        let now = Instant::now();
        left.heads.retain(|_, (id, _)| *id != group);
        let Left { unique_rows, landed_rows, pruned, .. } = &mut *left;
        if now.duration_since(*pruned) >= Duration::from_secs(1) {
            landed_rows.retain(|_, at| now.duration_since(*at) < LANDED_ROWS_KEPT);
            *pruned = now;
        }
        unique_rows.retain(|row, id| {
            if *id == group {
                landed_rows.insert(row.clone(), now);
            }
            *id != group
        });
    }
}

/// What the group knows of a stream: the state to decide the next command on.
#[derive(Clone)]
pub(super) struct Head<A> {
    state: A,
    version: i64,
    account_id: Option<Uuid>,
    /// For a state a group left that may not commit: its last event, which the stream's head
    /// must be for a decision on this state to stand (the version alone does not prove it: the
    /// group may fail while others append as many events).
    last_event: Option<Uuid>,
}

/// A command that decided events, waiting for the group's commit.
pub(super) struct Decided<A: WriteSide> {
    pub(super) job: Job<A>,
    pub(super) append: StreamAppend,
    /// The event the stream's head must be (see [`Head::last_event`]).
    pub(super) after_event: Option<Uuid>,
    pub(super) events: Vec<A::Event>,
    pub(super) aggregate: A,
}

/// Decides every job on the latest known state of its stream, in arrival order (each on the
/// state its predecessors in the group left). Jobs that decided nothing, or were refused, run
/// alone; those that would write a unique row the group (or one in flight) writes go `after`
/// the group, to run alone once it landed; a job whose stream could not be read is told so.
///
/// The worker's first decision (`in_flight`: the groups in flight and this group's id) starts
/// from the states the groups in flight left, and tells them to the next groups; it takes a
/// stream that is not known and whose first command starts it to be empty, unread. A decision
/// again, after a stale state failed a group, brings every cached state up to date (reading the
/// events after it) and reads the others.
pub(super) async fn decide_all<A: WriteSide>(
    dispatcher: &Dispatcher,
    jobs: Vec<Job<A>>,
    in_flight: Option<(&InFlight<A>, u64)>,
    after: &mut Vec<Job<A>>,
) -> Vec<Decided<A>> {
    let mut heads = latest_of_all(dispatcher, &jobs, in_flight.map(|(f, _)| f)).await;
    let mut decided: Vec<Decided<A>> = Vec::with_capacity(jobs.len());
    let mut unique_rows: HashSet<String> = HashSet::new();
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
                // A unique row this group, one in flight or one landed since the command read its
                // facts writes already: after the group, alone, on facts read under the lock.
                let rows = A::unique_rows(&events);
                if rows.iter().any(|row| unique_rows.contains(row))
                    || in_flight.is_some_and(|(f, _)| {
                        let read = job.queued.checked_sub(READ_BEFORE_QUEUED).unwrap_or(job.queued);
                        f.writes_any(&rows, read)
                    })
                {
                    after.push(job);
                    continue;
                }
                if let Some((in_flight, group)) = in_flight {
                    in_flight.write(group, &rows);
                }
                unique_rows.extend(rows);
                let append = StreamAppend {
                    account_id: job.ctx.account_id,
                    stream,
                    expected_version: head.version,
                    metadata: job.ctx.metadata(),
                    events: new_events,
                };
                let after_event = head.last_event;
                *head = Head {
                    state: aggregate.clone(),
                    version: head.version + events.len() as i64,
                    account_id: Some(job.ctx.account_id),
                    last_event: append.events.last().map(|e| e.event_id),
                };
                if let Some((in_flight, group)) = in_flight {
                    in_flight.leave(group, append.stream.clone(), head.clone());
                }
                decided.push(Decided { job, append, after_event, events, aggregate });
            }
            _ => alone(dispatcher, job),
        }
    }
    decided
}

/// The latest known state of every stream of `jobs`, read at once: the cache's, else read
/// outside any transaction, the reads of different streams concurrently (on fresh or cold
/// streams, one read after another would make the worker, not the commit, the bottleneck).
async fn latest_of_all<A: WriteSide>(
    dispatcher: &Dispatcher,
    jobs: &[Job<A>],
    in_flight: Option<&InFlight<A>>,
) -> HashMap<StreamKey, Result<Head<A>, DispatchError>> {
    let mut heads = HashMap::with_capacity(jobs.len());
    // The other streams, each with whether its first command starts it.
    let mut unknown: Vec<(StreamKey, bool)> = Vec::new();
    let mut seen = HashSet::with_capacity(jobs.len());
    for job in jobs {
        if !seen.insert(job.stream_id.as_str()) {
            continue;
        }
        let stream = StreamKey::new(A::TYPE, &job.stream_id);
        match in_flight.and_then(|f| f.head(&stream)) {
            Some(head) => {
                heads.insert(stream, Ok(head));
            }
            None => unknown.push((stream, in_flight.is_some() && A::creates_stream(&job.command))),
        }
    }
    let refresh = in_flight.is_none();
    let read = futures::future::join_all(
        unknown.iter().map(|(s, starts)| latest::<A>(dispatcher, s, *starts, refresh)),
    )
    .await;
    heads.extend(unknown.into_iter().map(|(s, _)| s).zip(read));
    heads
}

/// The latest known state of a stream: the cache's (with `refresh`, brought up to date with the
/// events after it), else (unless `starts`: the command starts the stream, so it is taken to be
/// empty) read outside any transaction. The append checks the version under the lock either way.
async fn latest<A: WriteSide>(
    dispatcher: &Dispatcher,
    stream: &StreamKey,
    starts: bool,
    refresh: bool,
) -> Result<Head<A>, DispatchError> {
    if let Some(latest) = dispatcher.cache.latest::<A>(stream) {
        let mut head = Head {
            state: latest.state,
            version: latest.version,
            account_id: Some(latest.account_id),
            last_event: None,
        };
        // After a refused group, or when the node's reader of the log saw the stream move on.
        if refresh || latest.behind {
            let events = dispatcher.store.read_stream(stream, head.version, None).await?;
            apply_events(&mut head.state, &events)?;
            head.version = events.last().map_or(head.version, |e| e.version);
        }
        return Ok(head);
    }
    if starts {
        return Ok(Head { state: A::default(), version: 0, account_id: None, last_event: None });
    }
    Ok(match dispatcher.load::<A>(&stream.stream_id).await? {
        Some(loaded) => Head {
            state: loaded.aggregate,
            version: loaded.version,
            account_id: Some(loaded.account_id),
            last_event: None,
        },
        None => Head { state: A::default(), version: 0, account_id: None, last_event: None },
    })
}
