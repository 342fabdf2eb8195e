//! What runs jobs: a handler per kind, and how a handler says an attempt failed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::backoff::sidekiq_backoff;
use crate::job::Job;

/// Runs the jobs of one kind. Jobs run at least once: a handler must be idempotent (a job whose
/// node died mid-run runs again elsewhere).
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The kind it runs (a stored name: never renamed). How many attempts a job of it gets is
    /// set where it is enqueued ([`crate::NewJob::max_attempts`]).
    fn kind(&self) -> &'static str;
    /// How long after its `count`th failure (from 0) a job runs again.
    fn backoff(&self, count: i32) -> Duration {
        sidekiq_backoff(count)
    }
    /// Runs the job; a failure is recorded and the job retried.
    async fn run(&self, job: &Job) -> Result<(), Failure>;
}

/// Why a job's attempt failed, and, when the handler knows better than its backoff (a server's
/// `Retry-After`), when to try again.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub error: String,
    pub retry_in: Option<Duration>,
}

impl Failure {
    pub fn new(error: impl Into<String>) -> Self {
        Self { error: error.into(), retry_in: None }
    }

    /// Runs again after `delay` instead of the kind's backoff.
    pub fn retry_in(mut self, delay: Duration) -> Self {
        self.retry_in = Some(delay);
        self
    }
}

impl From<String> for Failure {
    fn from(error: String) -> Self {
        Self::new(error)
    }
}

impl From<&str> for Failure {
    fn from(error: &str) -> Self {
        Self::new(error)
    }
}

/// The handlers of a process, by kind.
#[derive(Clone, Default)]
pub struct Handlers {
    by_kind: HashMap<&'static str, Arc<dyn Handler>>,
}

impl Handlers {
    pub fn with(mut self, handler: impl Handler) -> Self {
        self.by_kind.insert(handler.kind(), Arc::new(handler));
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Handler>> {
        self.by_kind.get(kind)
    }

    /// The kinds there is a handler for.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.by_kind.keys().copied().collect()
    }
}
