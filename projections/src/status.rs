//! What operators and read endpoints ask of the runtime: where each projection is, and
//! waiting until read models include a position (read-your-writes).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parley_eventstore::{EventStore, LogCursor, StoreError};
use serde::Serialize;
use sqlx::PgPool;

use crate::error::ProjectionError;
use crate::generations::{self, GenerationState};

/// A projection generation as operators see it.
#[derive(Clone, Debug, Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    pub generation: i32,
    pub version: i32,
    /// `running`, `failing`, `rebuilding` or `handing_over`.
    pub status: String,
    pub position: LogCursor,
    /// Readable events not yet applied.
    pub lag: i64,
    /// How long the oldest of them has waited (0 when there is none).
    pub lag_seconds: f64,
    pub events_applied: i64,
    pub last_error: Option<String>,
    pub last_error_position: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// Every projection generation that is not retired.
pub async fn list(store: &EventStore) -> Result<Vec<ProjectionStatus>, ProjectionError> {
    let mut out = Vec::new();
    for g in generations::load_all(store.pool()).await? {
        let (lag, lag_seconds): (i64, f64) = sqlx::query_as(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(recorded_at)), 0)::float8 FROM events \
             WHERE (transaction_id, position) > ($1::text::xid8, $2) \
               AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())",
        )
        .bind(g.cursor.transaction_id_text())
        .bind(g.cursor.position)
        .fetch_one(store.pool())
        .await?;
        let status = match (g.state, g.last_error.is_some()) {
            (_, true) => "failing",
            (GenerationState::Building, _) => "rebuilding",
            (GenerationState::Ready, _) => "handing_over",
            _ => "running",
        };
        out.push(ProjectionStatus {
            name: g.name,
            generation: g.generation,
            version: g.version,
            status: status.into(),
            position: g.cursor,
            lag,
            lag_seconds: lag_seconds.max(0.0),
            events_applied: g.events_applied,
            last_error: g.last_error,
            last_error_position: g.last_error_position,
            updated_at: g.updated_at,
        });
    }
    Ok(out)
}

/// Where each projection generation is in a replica's copy of the read models (`replica` is a
/// pool on the standby): `(name, generation) → cursor`.
pub async fn positions_in(replica: &PgPool) -> Result<Vec<(String, i32, LogCursor)>, ProjectionError> {
    Ok(generations::load_all(replica).await?.into_iter().map(|g| (g.name, g.generation, g.cursor)).collect())
}

/// Events of the log after `from` up to and including `to`: how far a replica's copy of a read
/// model (at `from`) is behind the primary's (at `to`).
pub async fn events_between(
    store: &EventStore,
    from: LogCursor,
    to: LogCursor,
) -> Result<i64, ProjectionError> {
    if from >= to {
        return Ok(0);
    }
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM events \
         WHERE (transaction_id, position) > ($1::text::xid8, $2) \
           AND (transaction_id, position) <= ($3::text::xid8, $4)",
    )
    .bind(from.transaction_id_text())
    .bind(from.position)
    .bind(to.transaction_id_text())
    .bind(to.position)
    .fetch_one(store.pool())
    .await?;
    Ok(n)
}

/// Waits until the live generation of every projection in `names` has applied `cursor`, or
/// `timeout` passes ([`StoreError::Timeout`]).
pub async fn wait_for(
    pool: &PgPool,
    names: &[&str],
    cursor: LogCursor,
    timeout: Duration,
) -> Result<(), ProjectionError> {
    let deadline = Instant::now() + timeout;
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut delay = Duration::from_millis(1);
    loop {
        let (reached,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM projection_generations \
             WHERE name = ANY($1) AND state = 'live' \
               AND (cursor_tx, cursor_position) >= ($2::text::xid8, $3)",
        )
        .bind(&names)
        .bind(cursor.transaction_id_text())
        .bind(cursor.position)
        .fetch_one(pool)
        .await?;
        if reached == names.len() as i64 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StoreError::Timeout(cursor).into());
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(25));
    }
}
