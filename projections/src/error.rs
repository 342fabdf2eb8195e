use parley_eventstore::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// Another runner moved the checkpoint: this one lost its lease and must stop writing.
    #[error("checkpoint of {0} was moved by another runner")]
    Fenced(String),
    #[error("no projection named {0}")]
    Unknown(String),
    #[error("event {event_type} at {position} could not be applied: {message}")]
    Apply { event_type: String, position: i64, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl ProjectionError {
    pub fn apply(event: &parley_eventstore::RecordedEvent, message: impl ToString) -> Self {
        ProjectionError::Apply {
            event_type: event.event_type.clone(),
            position: event.position,
            message: message.to_string(),
        }
    }
}
