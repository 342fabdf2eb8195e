use parley_aggregates::PayloadError;
use parley_eventstore::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("unknown stream type {0:?}")]
    UnknownStreamType(String),
    #[error("stream {0} has no events")]
    EmptyStream(String),
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("heads file: {0}")]
    Heads(String),
}
