use crate::cursor::LogCursor;

/// What can go wrong talking to the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream is not at the expected version: someone else appended first.
    #[error("stream {stream_type}/{stream_id} is at version {actual}, expected {expected}")]
    WrongExpectedVersion { stream_type: String, stream_id: String, expected: i64, actual: i64 },
    /// The stream's head was written by a transaction younger than ours (ours obtained its
    /// transaction id before taking the stream lock). Retry in a new transaction.
    #[error("stream {stream_type}/{stream_id} must be appended in a new transaction")]
    RetryTransaction { stream_type: String, stream_id: String },
    #[error("stored data could not be decoded: {0}")]
    Decode(String),
    #[error("the log is append-only")]
    AppendOnly,
    #[error("projection has not reached {0} in time")]
    Timeout(LogCursor),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// The stream a version or age check refused, when this is such a refusal.
    pub fn refused_stream(&self) -> Option<crate::StreamKey> {
        match self {
            StoreError::WrongExpectedVersion { stream_type, stream_id, .. }
            | StoreError::RetryTransaction { stream_type, stream_id } => {
                Some(crate::StreamKey::new(stream_type.clone(), stream_id.clone()))
            }
            _ => None,
        }
    }

    /// Whether a command that hit this error can be re-decided and tried again.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::WrongExpectedVersion { .. } | StoreError::RetryTransaction { .. } => true,
            StoreError::Database(e) => is_transient(e),
            _ => false,
        }
    }

    /// Whether the database is restarting, stopped or out of reach (see [`is_unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Database(e) if is_unavailable(e))
    }
}

/// Whether `e` says the database cannot be reached or is going away rather than that a
/// statement is wrong: no connection could be had in time, the connection broke, or the server
/// is shutting down, starting or out of connections. Clients should try again later (503), and
/// nothing a client sent can cause it.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        // A connection that died mid-message surfaces as a protocol error.
        sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|code| {
            // 08: connection exception; 57P01-03: admin or crash shutdown, cannot connect now;
            // 53300: too many connections.
            code.starts_with("08") || code.starts_with("57P") || code == "53300"
        }),
        _ => false,
    }
}

/// Serialization failures and deadlocks are safe to retry.
fn is_transient(e: &sqlx::Error) -> bool {
    matches!(e.as_database_error().and_then(|d| d.code()).as_deref(), Some("40001" | "40P01"))
}
