//! Read-your-writes: queries given `X-Min-Position` answer once what they read includes it.

use std::time::{Duration, Instant};

use parley_eventstore::LogCursor;
use parley_projections::wait_for;

use super::error::{lagging, ApiError};
use super::state::AppState;

/// How long a query waits for its read models before answering 503 `projection_lagging`.
pub const MAX_WAIT: Duration = Duration::from_secs(5);

/// Waits until the live generation of every projection in `names` has applied `min`.
pub async fn projections(state: &AppState, names: &[&str], min: Option<LogCursor>) -> Result<(), ApiError> {
    let Some(min) = min else { return Ok(()) };
    wait_for(state.app.store.pool(), names, min, MAX_WAIT).await.map_err(ApiError::from)
}

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
