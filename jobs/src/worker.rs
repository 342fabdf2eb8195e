//! Running jobs: a worker claims from weighted queues as it has room, runs each job's handler,
//! renews its leases while they run, rescues the jobs of dead nodes, and on shutdown stops
//! claiming, lets running jobs finish within a grace period and hands the rest back.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use crate::backoff::sidekiq_backoff;
use crate::handler::Handlers;
use crate::job::{Job, JobState, QueueName};
use crate::queue::{JobQueue, NOTIFY_CHANNEL};

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Names this node in `leased_by`.
    pub node: String,
    /// Jobs run at once.
    pub concurrency: usize,
    /// Queues and their weights: a free slot is offered to a queue picked at random in
    /// proportion to its weight (then to the others, heaviest first, if it is empty).
    pub queues: Vec<(QueueName, u32)>,
    /// A running job's lease; renewed every third of it.
    pub lease: Duration,
    /// Backstop poll when no wake-up comes.
    pub poll: Duration,
    /// How often expired leases are looked for.
    pub rescue_every: Duration,
    /// How long running jobs may finish on shutdown before they are handed back.
    pub grace: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            node: format!("node-{}", Uuid::now_v7().simple()),
            concurrency: 10,
            queues: QueueName::ALL.iter().map(|q| (*q, q.weight())).collect(),
            lease: Duration::from_secs(15),
            poll: Duration::from_secs(1),
            rescue_every: Duration::from_secs(5),
            grace: Duration::from_secs(10),
        }
    }
}

/// Marks finished jobs completed, as many at once as have finished meanwhile, until every sender
/// is gone.
async fn complete_in_batches(queue: JobQueue, node: String, mut finished: mpsc::UnboundedReceiver<Uuid>) {
    let mut batch = Vec::with_capacity(COMPLETION_BATCH);
    while finished.recv_many(&mut batch, COMPLETION_BATCH).await > 0 {
        if let Err(e) = queue.complete_many(&batch, &node).await {
            tracing::warn!(error = %e, jobs = batch.len(), "could not mark jobs completed; they will run again");
        }
        batch.clear();
    }
}

/// The task id of a finished job task.
fn finished(done: &Result<(tokio::task::Id, Uuid), tokio::task::JoinError>) -> tokio::task::Id {
    match done {
        Ok((task, _)) => *task,
        Err(e) => e.id(),
    }
}

/// One process's worker.
#[derive(Clone)]
pub struct Worker {
    queue: JobQueue,
    handlers: Arc<Handlers>,
    options: WorkerOptions,
    /// While running: where finished jobs go to be marked completed together.
    completions: Option<mpsc::UnboundedSender<Uuid>>,
}

/// Most jobs marked completed in one statement.
const COMPLETION_BATCH: usize = 500;

impl Worker {
    pub fn new(queue: JobQueue, handlers: Handlers, options: WorkerOptions) -> Self {
        Self { queue, handlers: Arc::new(handlers), options, completions: None }
    }

    pub fn node(&self) -> &str {
        &self.options.node
    }

    /// Claims and runs every ready job, one at a time, until none is left; returns how many
    /// ran. For tests and tools: the step a worker takes, driven by hand.
    pub async fn drain(&self) -> Result<usize, sqlx::Error> {
        let mut ran = 0;
        loop {
            let claimed = self.claim(1, &mut HashSet::new()).await?;
            if claimed.is_empty() {
                return Ok(ran);
            }
            for job in claimed {
                self.execute(job).await;
                ran += 1;
            }
        }
    }

    /// Runs until `stop` completes, then shuts down gracefully.
    pub async fn run(mut self, stop: impl Future<Output = ()> + Send) {
        // Completions are written in batches: under load one statement marks many jobs done.
        let (completions, finished_jobs) = mpsc::unbounded_channel();
        self.completions = Some(completions);
        let completer =
            tokio::spawn(complete_in_batches(self.queue.clone(), self.options.node.clone(), finished_jobs));
        let mut listener = match PgListener::connect_with(self.queue.pool()).await {
            Ok(mut l) => match l.listen(NOTIFY_CHANNEL).await {
                Ok(()) => Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, "job worker cannot listen; it polls");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "job worker cannot listen; it polls");
                None
            }
        };
        tokio::pin!(stop);
        let mut running: JoinSet<Uuid> = JoinSet::new();
        let mut ids: HashMap<tokio::task::Id, Uuid> = HashMap::new();
        // Heartbeats, rescues and gauges run beside the loop, so claiming never waits for them.
        let (housekept, housekeeping_stopped) = tokio::sync::watch::channel(false);
        let housekeeping = tokio::spawn(self.clone().housekeep(housekeeping_stopped));
        // The backstop: an interval (not a sleep made anew each turn, which the other branches
        // would keep from ever completing).
        let mut poll = tokio::time::interval(self.options.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Queues found empty since the last wake-up or poll: not asked again until then.
        let mut empty: HashSet<QueueName> = HashSet::new();
        let mut wake_ups = self.queue.wake_ups();
        loop {
            while let Some(done) = running.try_join_next_with_id() {
                ids.remove(&finished(&done));
            }
            let room = self.options.concurrency.saturating_sub(running.len());
            if room > 0 {
                // Wake-ups before this point are answered by this claim; one that comes while
                // it runs leaves `changed()` ready, so the loop claims again at once.
                wake_ups.mark_unchanged();
                match self.claim(room as i64, &mut empty).await {
                    Ok(jobs) => {
                        for job in jobs {
                            let (worker, id) = (self.clone(), job.id);
                            let handle = running.spawn(async move {
                                worker.execute(job).await;
                                id
                            });
                            ids.insert(handle.id(), id);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not claim jobs"),
                }
            }
            let room_now = self.options.concurrency.saturating_sub(running.len());
            tokio::select! {
                _ = &mut stop => break,
                Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                    ids.remove(&finished(&done));
                }
                _ = wake_ups.changed(), if room_now > 0 => empty.clear(),
                _ = async { match listener.as_mut() { Some(l) => { let _ = l.recv().await; } None => std::future::pending().await } }, if room_now > 0 => empty.clear(),
                _ = poll.tick(), if room_now > 0 => empty.clear(),
            }
        }
        self.shut_down(running, ids).await;
        let _ = housekept.send(true);
        let _ = housekeeping.await;
        // Every finished job's completion is written before the worker returns.
        self.completions = None;
        drop(self);
        let _ = completer.await;
    }

    /// Renews this node's leases, rescues the jobs of dead nodes (waking the workers when it
    /// freed some) and records the queue's gauges, until told to stop.
    async fn housekeep(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut heartbeat = tokio::time::interval(self.options.lease / 3);
        let mut rescue = tokio::time::interval(self.options.rescue_every);
        let mut depths = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = heartbeat.tick() => {
                    if let Err(e) = self.queue.heartbeat(&self.options.node, self.options.lease).await {
                        tracing::warn!(error = %e, "could not renew job leases");
                    }
                }
                _ = rescue.tick() => match self.queue.rescue().await {
                    Ok(0) => {}
                    Ok(_) => self.queue.wake().await,
                    Err(e) => tracing::warn!(error = %e, "could not rescue jobs"),
                },
                _ = depths.tick() => {
                    let _ = self.queue.record_depths().await;
                }
            }
        }
    }

    /// Stops claiming; running jobs get the grace period, then the rest are handed back.
    async fn shut_down(&self, mut running: JoinSet<Uuid>, mut ids: HashMap<tokio::task::Id, Uuid>) {
        let deadline = Instant::now() + self.options.grace;
        while !running.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, running.join_next_with_id()).await {
                Ok(Some(Ok((task, _)))) => {
                    ids.remove(&task);
                }
                Ok(Some(Err(e))) => {
                    ids.remove(&e.id());
                }
                Ok(None) => break,
                Err(_) => {
                    // Renew the leases while the heartbeat is gone, hand them back.
                    running.abort_all();
                    let left: Vec<Uuid> = ids.values().copied().collect();
                    match self.queue.hand_back(&self.options.node, &left).await {
                        Ok(n) => tracing::info!(jobs = n, "handed unfinished jobs back to the queue"),
                        Err(e) => {
                            tracing::warn!(error = %e, "could not hand jobs back; their leases will expire")
                        }
                    }
                    break;
                }
            }
        }
    }

    /// Claims up to `room` jobs in one statement, offering the slots to queues by weight (a
    /// queue picked in proportion to its weight first, then the others, heaviest first). Queues
    /// in `empty` are skipped; when fewer jobs than asked came, every queue asked joins it.
    async fn claim(&self, room: i64, empty: &mut HashSet<QueueName>) -> Result<Vec<Job>, sqlx::Error> {
        let kinds = self.handlers.kinds();
        let order: Vec<QueueName> = self.queue_order().into_iter().filter(|q| !empty.contains(q)).collect();
        if order.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = order.iter().map(|q| q.as_str()).collect();
        let (node, lease) = (&self.options.node, self.options.lease);
        let claimed = self.queue.claim_from(&names, &kinds, room, node, lease).await?;
        if (claimed.len() as i64) < room {
            empty.extend(order);
        }
        Ok(claimed)
    }

    /// The queues in the order a free slot is offered to them: one picked by weight, then the
    /// others heaviest first.
    fn queue_order(&self) -> Vec<QueueName> {
        let queues = &self.options.queues;
        let total: u32 = queues.iter().map(|(_, w)| w).sum();
        let mut order: Vec<QueueName> = Vec::with_capacity(queues.len());
        if total > 0 {
            let mut pick = rand::rng().random_range(0..total);
            for (queue, weight) in queues {
                if pick < *weight {
                    order.push(*queue);
                    break;
                }
                pick -= weight;
            }
        }
        let mut rest: Vec<(QueueName, u32)> =
            queues.iter().filter(|(q, w)| *w > 0 && !order.contains(q)).copied().collect();
        rest.sort_by_key(|(_, weight)| std::cmp::Reverse(*weight));
        order.extend(rest.into_iter().map(|(q, _)| q));
        order
    }

    /// Runs one claimed job and records its outcome.
    async fn execute(&self, job: Job) {
        let span = tracing::info_span!("job", id = %job.id, kind = %job.kind, queue = %job.queue, attempt = job.attempt);
        self.execute_in_span(job).instrument(span).await
    }

    async fn execute_in_span(&self, job: Job) {
        let started = Instant::now();
        let outcome = match self.handlers.get(&job.kind) {
            Some(handler) => {
                let handler = handler.clone();
                let run = handler.run(&job);
                // A panicking handler fails its job, not the worker.
                match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run)).await {
                    Ok(result) => result.map_err(|f| {
                        let retry_in = f.retry_in.unwrap_or_else(|| handler.backoff(job.attempt - 1));
                        (f.error, retry_in)
                    }),
                    Err(_) => Err(("the handler panicked".to_owned(), handler.backoff(job.attempt - 1))),
                }
            }
            None => Err((
                format!("no handler for jobs of kind {:?} on this node", job.kind),
                sidekiq_backoff(job.attempt - 1),
            )),
        };
        let labels = [("kind", job.kind.clone()), ("queue", job.queue.clone())];
        metrics::histogram!("parley_job_run_seconds", &labels).record(started.elapsed().as_secs_f64());
        let node = &self.options.node;
        match outcome {
            Ok(()) => {
                let batched = self.completions.as_ref().is_some_and(|c| c.send(job.id).is_ok());
                if !batched {
                    if let Err(e) = self.queue.complete(job.id, node).await {
                        tracing::warn!(error = %e, "could not mark a job completed; it will run again");
                    }
                }
                metrics::counter!("parley_jobs_completed_total", &labels).increment(1);
            }
            Err((error, retry_in)) => {
                tracing::warn!(%error, "job failed");
                match self.queue.fail(&job, node, &error, retry_in).await {
                    Ok(Some(JobState::Discarded)) => {
                        metrics::counter!("parley_jobs_discarded_total", &labels).increment(1)
                    }
                    Ok(_) => metrics::counter!("parley_jobs_retried_total", &labels).increment(1),
                    Err(e) => tracing::warn!(error = %e, "could not record a job's failure"),
                }
            }
        }
    }
}
