//! Reading the log: one stream in version order, or all streams in commit-safe order.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::append::parse_xid;
use crate::cursor::LogCursor;
use crate::error::StoreError;
use crate::event::RecordedEvent;
use crate::upcast::Upcasters;
use crate::StreamKey;

/// The columns of a recorded event. The transaction id travels as text (sqlx has no `xid8`), under
/// its own name: aliased `transaction_id`, it would capture a bare `ORDER BY transaction_id`, which
/// binds to output columns first, and sort the log by the text of its ids.
pub(crate) const COLUMNS: &str =
    "position, transaction_id::text AS transaction_id_text, event_id, account_id, \
     stream_type, stream_id, version, event_type, schema_version, payload, metadata, recorded_at";

pub(crate) fn decode(row: &PgRow, upcasters: &Upcasters) -> Result<RecordedEvent, StoreError> {
    let tx: String = row.try_get("transaction_id_text")?;
    let event_type: String = row.try_get("event_type")?;
    let (schema_version, payload) =
        upcasters.upcast(&event_type, row.try_get("schema_version")?, row.try_get("payload")?);
    Ok(RecordedEvent {
        position: row.try_get("position")?,
        transaction_id: parse_xid(&tx)?,
        event_id: row.try_get("event_id")?,
        account_id: row.try_get("account_id")?,
        stream_type: row.try_get("stream_type")?,
        stream_id: row.try_get("stream_id")?,
        version: row.try_get("version")?,
        event_type,
        schema_version,
        payload,
        metadata: row.try_get("metadata")?,
        recorded_at: row.try_get("recorded_at")?,
    })
}

/// Events of one stream with `after_version < version <= up_to_version`, in version order.
pub(crate) async fn read_stream(
    conn: &mut PgConnection,
    upcasters: &Upcasters,
    stream_type: &str,
    stream_id: &str,
    after_version: i64,
    up_to_version: Option<i64>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events \
         WHERE stream_type = $1 AND stream_id = $2 AND version > $3 AND version <= $4 \
         ORDER BY version"
    ))
    .bind(stream_type)
    .bind(stream_id)
    .bind(after_version)
    .bind(up_to_version.unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| decode(r, upcasters)).collect()
}

/// Up to `limit` events after `cursor`, in commit-safe order (DESIGN.md, invariant 2).
///
/// Only rows of transactions older than the statement's snapshot `xmin` are returned: every such
/// transaction has finished, so no event with a smaller cursor can commit later.
pub(crate) async fn read_all_after(
    conn: &mut PgConnection,
    upcasters: &Upcasters,
    cursor: LogCursor,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events \
         WHERE (transaction_id, position) > ($1::text::xid8, $2) \
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY events.transaction_id, events.position \
         LIMIT $3"
    ))
    .bind(cursor.transaction_id_text())
    .bind(cursor.position)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| decode(r, upcasters)).collect()
}

/// Whether committed events wait behind the horizon: a transaction older than them is still open.
/// Readers then re-poll within milliseconds instead of waiting for the next wake-up.
pub(crate) async fn events_behind_horizon(conn: &mut PgConnection) -> Result<bool, StoreError> {
    // The newest event's transaction, by one step down the commit-order index: an `EXISTS` with
    // the same condition was planned as a sequential scan of the whole log when the table had no
    // statistics (autovacuum off), and the readers' latency grew with the log.
    let newest: Option<(bool,)> = sqlx::query_as(
        "SELECT transaction_id >= pg_snapshot_xmin(pg_current_snapshot()) FROM events \
         ORDER BY transaction_id DESC, position DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(newest.is_some_and(|(pending,)| pending))
}

/// The cursor of a stream's newest committed event (readable or not yet: a reader waiting for
/// it waits for the horizon too).
pub(crate) async fn stream_head(
    conn: &mut PgConnection,
    stream: &StreamKey,
) -> Result<Option<LogCursor>, StoreError> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT transaction_id::text AS transaction_id_text, position FROM events \
         WHERE stream_type = $1 AND stream_id = $2 ORDER BY version DESC LIMIT 1",
    )
    .bind(&stream.stream_type)
    .bind(&stream.stream_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|(tx, pos)| Ok(LogCursor::new(parse_xid(&tx)?, pos))).transpose()
}

/// The cursor of the newest readable event (the log head as readers see it).
pub(crate) async fn head(conn: &mut PgConnection) -> Result<LogCursor, StoreError> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT transaction_id::text AS transaction_id_text, position FROM events \
         WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY events.transaction_id DESC, events.position DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some((tx, pos)) => Ok(LogCursor::new(parse_xid(&tx)?, pos)),
        None => Ok(LogCursor::START),
    }
}

/// Filters for audit and replay queries over the log. Every field narrows the result.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub account_id: Option<Uuid>,
    pub stream_type: Option<String>,
    pub stream_id: Option<String>,
    pub event_type: Option<String>,
    pub actor_id: Option<Uuid>,
    /// The events of one request (or job) and everything it caused.
    pub correlation_id: Option<Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub after: LogCursor,
}

/// Up to `limit` events matching `filter`, after `filter.after`, in commit-safe order.
pub(crate) async fn query(
    conn: &mut PgConnection,
    upcasters: &Upcasters,
    filter: &EventFilter,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events \
         WHERE (transaction_id, position) > ($1::text::xid8, $2) \
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
           AND ($3::uuid IS NULL OR account_id = $3) \
           AND ($4::text IS NULL OR stream_type = $4) \
           AND ($5::text IS NULL OR stream_id = $5) \
           AND ($6::text IS NULL OR event_type = $6) \
           AND ($7::text IS NULL OR metadata->>'actor_id' = $7) \
           AND ($8::timestamptz IS NULL OR recorded_at >= $8) \
           AND ($9::timestamptz IS NULL OR recorded_at < $9) \
           AND ($11::text IS NULL OR metadata->>'correlation_id' = $11) \
         ORDER BY events.transaction_id, events.position \
         LIMIT $10"
    ))
    .bind(filter.after.transaction_id_text())
    .bind(filter.after.position)
    .bind(filter.account_id)
    .bind(&filter.stream_type)
    .bind(&filter.stream_id)
    .bind(&filter.event_type)
    .bind(filter.actor_id.map(|a| a.to_string()))
    .bind(filter.since)
    .bind(filter.until)
    .bind(limit)
    .bind(filter.correlation_id.map(|c| c.to_string()))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| decode(r, upcasters)).collect()
}
