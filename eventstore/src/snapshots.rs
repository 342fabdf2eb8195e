//! Aggregate snapshots: a cache of an aggregate's state at a version, so loading costs the
//! snapshot plus the events after it, not the whole stream (DESIGN.md, invariant 4).

use serde_json::Value;
use sqlx::PgConnection;

use crate::error::StoreError;
use crate::event::StreamKey;

/// A stored state and the stream version it reflects.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub version: i64,
    pub state: Value,
}

/// The stream's snapshot, if one exists for this `state_version` of the aggregate's state shape.
/// Snapshots of another shape are ignored (the aggregate is rebuilt from its events).
pub async fn load(
    conn: &mut PgConnection,
    stream: &StreamKey,
    state_version: i32,
) -> Result<Option<Snapshot>, StoreError> {
    let row: Option<(i64, Value)> = sqlx::query_as(
        "SELECT version, state FROM snapshots \
         WHERE stream_type = $1 AND stream_id = $2 AND state_version = $3",
    )
    .bind(&stream.stream_type)
    .bind(&stream.stream_id)
    .bind(state_version)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(version, state)| Snapshot { version, state }))
}

/// Stores (or replaces) the stream's snapshot.
pub async fn save(
    conn: &mut PgConnection,
    stream: &StreamKey,
    state_version: i32,
    snapshot: &Snapshot,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO snapshots (stream_type, stream_id, version, state_version, state) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (stream_type, stream_id) DO UPDATE SET version = EXCLUDED.version, \
           state_version = EXCLUDED.state_version, state = EXCLUDED.state, taken_at = now() \
         WHERE snapshots.version < EXCLUDED.version OR snapshots.state_version <> EXCLUDED.state_version",
    )
    .bind(&stream.stream_type)
    .bind(&stream.stream_id)
    .bind(snapshot.version)
    .bind(state_version)
    .bind(&snapshot.state)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
