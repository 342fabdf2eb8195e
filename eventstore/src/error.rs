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
    /// Whether a command that hit this error can be re-decided and tried again.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::WrongExpectedVersion { .. } | StoreError::RetryTransaction { .. } => true,
            StoreError::Database(e) => is_transient(e),
            _ => false,
        }
    }
}

/// Serialization failures and deadlocks are safe to retry.
fn is_transient(e: &sqlx::Error) -> bool {
    matches!(e.as_database_error().and_then(|d| d.code()).as_deref(), Some("40001" | "40P01"))
}
