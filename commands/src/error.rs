use parley_aggregates::{DomainError, PayloadError};
use parley_eventstore::{StoreError, StreamKey};

/// Why a command did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// A business rule refused it.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The actor may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The credentials are wrong (the same answer for an unknown email and a wrong password).
    #[error("invalid email or password")]
    Unauthenticated,
    /// A rotated refresh token was presented again: this session has just been ended.
    #[error("the session has ended")]
    SessionRevoked(uuid::Uuid),
    /// The resource is not at the version the client expected (`If-Match`).
    #[error("the resource is at version {current}")]
    PreconditionFailed { current: i64 },
    /// The target does not exist, or belongs to another account.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A value another stream holds (an email, a direct conversation's pair).
    #[error("{kind} is already taken")]
    Claimed { kind: &'static str, holder: StreamKey },
    /// A field's value is not acceptable.
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    /// The idempotency key was used before with another request body.
    #[error("this idempotency key was used with another request")]
    IdempotencyKeyReused,
    /// The first request with this idempotency key is still running.
    #[error("a request with this idempotency key is still in progress")]
    IdempotencyInProgress,
    #[error("an event could not be encoded: {0}")]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This node cannot run the command now (it is shutting down).
    #[error("unavailable: {0}")]
    Unavailable(&'static str),
}

impl DispatchError {
    /// Whether trying the whole command again, in a new transaction, may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DispatchError::Store(e) if e.is_retryable())
    }
}

impl From<sqlx::Error> for DispatchError {
    fn from(e: sqlx::Error) -> Self {
        DispatchError::Store(StoreError::Database(e))
    }
}
