//! The durable job queue, on PostgreSQL and Parley's own pool: jobs are rows of `jobs`, enqueued
//! inside any transaction (a job exists exactly when the change that caused it committed),
//! claimed with `FOR UPDATE SKIP LOCKED` from weighted queues, run under a lease renewed by
//! heartbeats (a dead node's jobs run again within seconds), retried with backoff, then kept in
//! the dead set (`discarded`) to be retried or removed by hand. Cron schedules enqueue once per
//! tick across every node. Finished jobs are pruned by state and age.
//!
//! It knows no domain type: a job is a kind, a queue and JSON arguments, and a [`Handler`] per
//! kind runs it. Handlers run at least once and must be idempotent. Time comes from a [`Clock`],
//! so tests drive backoff and cron by hand.

mod admin;
mod backoff;
mod clock;
mod cron;
mod handler;
mod job;
mod queue;
mod worker;

pub use admin::{JobsPage, Pruned, Retention};
pub use backoff::sidekiq_backoff;
pub use clock::{Clock, ManualClock, SystemClock};
pub use cron::{Cron, CronError, Schedule};
pub use handler::{Failure, Handler, Handlers};
pub use job::{Job, JobState, NewJob, QueueName, DEFAULT_MAX_ATTEMPTS};
pub use queue::{JobError, JobQueue, NOTIFY_CHANNEL};
pub use worker::{Worker, WorkerOptions};
