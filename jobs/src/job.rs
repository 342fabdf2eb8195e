//! A job as the queue stores it, and one about to be enqueued.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// Attempts a job gets unless its kind says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 25;

/// A job's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Ready to run now.
    Available,
    /// To run at `run_at`.
    Scheduled,
    Running,
    /// Failed; runs again at `run_at`.
    Retryable,
    Completed,
    /// The dead set: failed on its last attempt.
    Discarded,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Available,
        JobState::Scheduled,
        JobState::Running,
        JobState::Retryable,
        JobState::Completed,
        JobState::Discarded,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Available => "available",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Retryable => "retryable",
            JobState::Completed => "completed",
            JobState::Discarded => "discarded",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("no job state {s:?}"))
    }
}

/// The queues, by how much of the workers' attention each gets (Sidekiq's weights).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueName {
    Critical,
    High,
    Default,
    Low,
}

impl QueueName {
    pub const ALL: [QueueName; 4] =
        [QueueName::Critical, QueueName::High, QueueName::Default, QueueName::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Critical => "critical",
            QueueName::High => "high",
            QueueName::Default => "default",
            QueueName::Low => "low",
        }
    }

    /// Its default weight: critical 10, high 5, default 3, low 1.
    pub fn weight(self) -> u32 {
        match self {
            QueueName::Critical => 10,
            QueueName::High => 5,
            QueueName::Default => 3,
            QueueName::Low => 1,
        }
    }
}

impl FromStr for QueueName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QueueName::ALL.into_iter().find(|q| q.as_str() == s).ok_or_else(|| format!("no queue {s:?}"))
    }
}

/// A stored job.
#[derive(utoipa::ToSchema, Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Job {
    pub id: Uuid,
    pub account_id: Uuid,
    pub kind: String,
    pub queue: String,
    pub priority: i16,
    pub state: String,
    /// Attempts so far, this one included while it runs.
    pub attempt: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub args: Value,
    #[serde(skip)]
    pub unique_key: Option<String>,
    /// `[{attempt, at, error}]`, one per failed attempt.
    pub errors: Value,
    #[serde(skip)]
    pub correlation_id: Option<Uuid>,
    #[serde(skip)]
    pub causation_id: Option<Uuid>,
    pub inserted_at: DateTime<Utc>,
    #[serde(skip)]
    pub attempted_at: Option<DateTime<Utc>>,
    /// When it finished: completed, discarded or cancelled.
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub leased_by: Option<String>,
    #[serde(skip)]
    pub lease_expires_at: Option<DateTime<Utc>>,
}

impl Job {
    pub fn state(&self) -> Option<JobState> {
        self.state.parse().ok()
    }
}

/// A job to enqueue.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub kind: String,
    pub queue: QueueName,
    /// Lower runs first within a queue.
    pub priority: i16,
    pub args: Value,
    /// The tenant; system jobs belong to the nil account.
    pub account_id: Uuid,
    pub max_attempts: i32,
    /// Not before then (now when `None`).
    pub run_at: Option<DateTime<Utc>>,
    /// At most one job of this kind with this key per period: enqueuing another in the same
    /// period does nothing while the first waits, runs or has completed (a dead or cancelled one
    /// frees the key). Periods longer than the completed jobs' retention (a day) are not kept.
    pub unique: Option<(String, Duration)>,
    pub correlation_id: Option<Uuid>,
    /// The event that caused it (process managers).
    pub causation_id: Option<Uuid>,
}

impl NewJob {
    pub fn new(kind: impl Into<String>, args: Value) -> Self {
        Self {
            kind: kind.into(),
            queue: QueueName::Default,
            priority: 0,
            args,
            account_id: Uuid::nil(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            run_at: None,
            unique: None,
            correlation_id: None,
            causation_id: None,
        }
    }

    pub fn queue(mut self, queue: QueueName) -> Self {
        self.queue = queue;
        self
    }

    pub fn account(mut self, account_id: Uuid) -> Self {
        self.account_id = account_id;
        self
    }

    pub fn max_attempts(mut self, max_attempts: i32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    pub fn unique(mut self, key: impl Into<String>, period: Duration) -> Self {
        self.unique = Some((key.into(), period));
        self
    }

    pub fn caused_by(mut self, event_id: Uuid) -> Self {
        self.causation_id = Some(event_id);
        self
    }

    pub fn correlated(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = Some(correlation_id);
        self
    }

    /// The stored unique key at `now`: the key and the period it falls in.
    pub(crate) fn unique_key(&self, now: DateTime<Utc>) -> Option<String> {
        let (key, period) = self.unique.as_ref()?;
        let period = period.as_secs().max(1) as i64;
        Some(format!("{key}@{}", now.timestamp().div_euclid(period)))
    }
}
