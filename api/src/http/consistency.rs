//! Read-your-writes for what reads the log itself (the audit API): it answers once the log is
//! readable up to `X-Min-Position`. Read models wait through `parley_projections::Reads`.

use std::time::{Duration, Instant};

use parley_eventstore::LogCursor;
use parley_projections::MAX_WAIT;

use super::error::{lagging, ApiError};
use super::state::AppState;

/// Waits until the log itself is readable up to `min` (queries that read the log directly).
pub async fn log(state: &AppState, min: Option<LogCursor>) -> Result<(), ApiError> {
    let Some(min) = min else { return Ok(()) };
    let deadline = Instant::now() + MAX_WAIT;
    let mut delay = Duration::from_millis(1);
    while state.app.store.head().await? < min {
        if Instant::now() >= deadline {
            return Err(lagging());
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(25));
    }
    Ok(())
}

/// The later of two optional positions.
pub fn later(a: Option<LogCursor>, b: Option<LogCursor>) -> Option<LogCursor> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}
