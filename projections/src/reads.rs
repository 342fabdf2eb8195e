//! How queries read: through [`Reads`], which waits until the read models a query names have
//! applied the client's `X-Min-Position` before the query runs. A query names what it reads as
//! [`ReadModel`]s, so read-your-writes waits on exactly those, and a misspelt name does not
//! compile.

use std::time::Duration;

use parley_eventstore::LogCursor;
use sqlx::PgPool;

use crate::error::ProjectionError;
use crate::status::wait_for;

/// Every read model, by the name its projection is stored under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadModel {
    Users,
    Conversations,
    Messages,
    Invitations,
    Roles,
    ApiKeys,
    Notifications,
    Webhooks,
    Calls,
    Analytics,
    Creator,
}

impl ReadModel {
    pub const ALL: [ReadModel; 11] = [
        ReadModel::Users,
        ReadModel::Conversations,
        ReadModel::Messages,
        ReadModel::Invitations,
        ReadModel::Roles,
        ReadModel::ApiKeys,
        ReadModel::Notifications,
        ReadModel::Webhooks,
        ReadModel::Calls,
        ReadModel::Analytics,
        ReadModel::Creator,
    ];

    /// The stored name: its checkpoint rows, schemas and lease are named after it.
    pub const fn name(self) -> &'static str {
        match self {
            ReadModel::Users => "users",
            ReadModel::Conversations => "conversations",
            ReadModel::Messages => "messages",
            ReadModel::Invitations => "invitations",
            ReadModel::Roles => "roles",
            ReadModel::ApiKeys => "api_keys",
            ReadModel::Notifications => "notifications",
            ReadModel::Webhooks => "webhooks",
            ReadModel::Calls => "calls",
            ReadModel::Analytics => "analytics",
            ReadModel::Creator => "creator",
        }
    }
}

/// How long a query waits for its read models before answering `StoreError::Timeout`
/// (503 `projection_lagging` over HTTP).
pub const MAX_WAIT: Duration = Duration::from_secs(5);

/// A query's access to the read models: the pool, and the position they must include.
#[derive(Clone, Copy)]
pub struct Reads<'a> {
    pool: &'a PgPool,
    min: Option<LogCursor>,
    wait: Duration,
}

impl<'a> Reads<'a> {
    /// Reads that include `min` when given (a client's `X-Min-Position`).
    pub fn new(pool: &'a PgPool, min: Option<LogCursor>) -> Self {
        Self { pool, min, wait: MAX_WAIT }
    }

    /// The same, waiting at most `wait` for the position (a replica's allowed lag: past it, the
    /// primary answers instead).
    pub fn waiting_at_most(pool: &'a PgPool, min: Option<LogCursor>, wait: Duration) -> Self {
        Self { pool, min, wait: wait.min(MAX_WAIT) }
    }

    /// The pool, once every read model in `models` has applied the position (at once without
    /// one). Every query starts here, naming what it reads.
    pub async fn of(&self, models: &[ReadModel]) -> Result<&'a PgPool, ProjectionError> {
        if let Some(min) = self.min {
            let names: Vec<&str> = models.iter().map(|m| m.name()).collect();
            wait_for(self.pool, &names, min, self.wait).await?;
        }
        Ok(self.pool)
    }

    /// The same reads without a position to wait for (a query that another one already waited
    /// for, within the same request).
    pub fn settled(&self) -> Reads<'a> {
        Self { pool: self.pool, min: None, wait: self.wait }
    }

    /// Waits once for every read model in `models`; the reads returned wait for nothing more.
    /// For a request (or a query) that runs several queries over those read models.
    pub async fn waited(&self, models: &[ReadModel]) -> Result<Reads<'a>, ProjectionError> {
        self.of(models).await?;
        Ok(self.settled())
    }
}
