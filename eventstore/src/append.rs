//! Appending to a stream: locked, with an expected version, hash-chained, atomic.

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::cursor::LogCursor;
use crate::error::StoreError;
use crate::event::{Metadata, NewEvent, StreamKey};
use crate::hash::{self, CanonicalEvent};

/// Events for one stream, to be appended if the stream is at `expected_version`
/// (0 for a stream that does not exist yet).
#[derive(Clone, Debug)]
pub struct StreamAppend {
    pub account_id: Uuid,
    pub stream: StreamKey,
    pub expected_version: i64,
    pub events: Vec<NewEvent>,
    pub metadata: Metadata,
}

/// The last event of a stream, as seen under its lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHead {
    /// 0 for a stream with no events.
    pub version: i64,
    /// Where the head event is in the log, if the stream has one.
    pub cursor: Option<LogCursor>,
    /// The account the stream belongs to, if it has events.
    pub account_id: Option<Uuid>,
    pub hash: Vec<u8>,
    /// The id of the locking transaction, assigned after the lock was taken.
    pub current_transaction_id: u64,
}

/// Where one appended event landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendedEvent {
    pub position: i64,
    pub transaction_id: u64,
    pub version: i64,
    pub event_id: Uuid,
    pub recorded_at: DateTime<Utc>,
}

impl AppendedEvent {
    pub fn cursor(&self) -> LogCursor {
        LogCursor::new(self.transaction_id, self.position)
    }
}

/// The result of an append: every event's place, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub events: Vec<AppendedEvent>,
}

impl Appended {
    /// The cursor of the last appended event; `None` when nothing was appended.
    pub fn cursor(&self) -> Option<LogCursor> {
        self.events.last().map(AppendedEvent::cursor)
    }

    /// The stream version after the append.
    pub fn version(&self) -> Option<i64> {
        self.events.last().map(|e| e.version)
    }
}

pub(crate) fn parse_xid(text: &str) -> Result<u64, StoreError> {
    text.parse().map_err(|_| StoreError::Decode(format!("transaction id {text:?}")))
}

/// Locks the stream for the rest of the transaction and returns its head.
pub(crate) async fn lock_stream(
    conn: &mut PgConnection,
    stream: &StreamKey,
) -> Result<StreamHead, StoreError> {
    type Row = (i64, Option<String>, Option<i64>, Option<Uuid>, Vec<u8>, String);
    let (version, head_tx, head_position, account_id, hash, current): Row = sqlx::query_as(
        "SELECT head_version, head_transaction_id::text, head_position, head_account_id, head_hash, \
                current_xid::text \
         FROM parley_lock_stream($1, $2)",
    )
    .bind(&stream.stream_type)
    .bind(&stream.stream_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(StreamHead {
        version,
        cursor: match (head_tx, head_position) {
            (Some(tx), Some(position)) => Some(LogCursor::new(parse_xid(&tx)?, position)),
            _ => None,
        },
        account_id,
        hash,
        current_transaction_id: parse_xid(&current)?,
    })
}

/// Locks every stream (sorted, so concurrent writers cannot deadlock) before the transaction
/// id is assigned, so that no stream's head can be younger than this transaction.
pub(crate) async fn lock_streams(conn: &mut PgConnection, streams: &[StreamKey]) -> Result<u64, StoreError> {
    let mut keys: Vec<String> = streams.iter().map(ToString::to_string).collect();
    keys.sort();
    keys.dedup();
    let (xid,): (String,) =
        sqlx::query_as("SELECT parley_lock_streams($1)::text").bind(&keys).fetch_one(&mut *conn).await?;
    parse_xid(&xid)
}

/// Appends in the connection's current transaction (or as its own, in autocommit).
///
/// `parley_append_one` (one event; `parley_append` calls it for each of several) takes the stream
/// lock, then the transaction id, checks the expected version and that the head was not written by
/// a younger transaction, and chains the hashes.
pub(crate) async fn append(conn: &mut PgConnection, append: &StreamAppend) -> Result<Appended, StoreError> {
    if append.events.is_empty() {
        return Ok(Appended { events: Vec::new() });
    }
    let recorded_at: DateTime<Utc> = Utc::now().trunc_subsecs(6);
    let metadata = append.metadata.to_json();
    let n = append.events.len();
    let mut ids = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut canonical = Vec::with_capacity(n);
    for (i, e) in append.events.iter().enumerate() {
        canonical.push(hash::canonical_bytes(&CanonicalEvent {
            stream_type: &append.stream.stream_type,
            stream_id: &append.stream.stream_id,
            version: append.expected_version + 1 + i as i64,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            event_id: e.event_id,
            account_id: append.account_id,
            payload: &e.payload,
            metadata: &metadata,
            recorded_at,
        }));
        ids.push(e.event_id);
        types.push(e.event_type.as_str());
        versions.push(e.schema_version);
        payloads.push(&e.payload);
    }
    if n == 1 {
        // The common case, through the scalar single-event function.
        let e = &append.events[0];
        let row: Result<(i64, String, i64), sqlx::Error> = sqlx::query_as(
            "SELECT out_position, out_transaction_id::text, out_version \
             FROM parley_append_one($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(append.account_id)
        .bind(&append.stream.stream_type)
        .bind(&append.stream.stream_id)
        .bind(append.expected_version)
        .bind(e.event_id)
        .bind(&e.event_type)
        .bind(e.schema_version)
        .bind(&e.payload)
        .bind(&metadata)
        .bind(recorded_at)
        .bind(&canonical[0])
        .fetch_one(&mut *conn)
        .await;
        let (position, tx, version) = row.map_err(|e| classify(e, append))?;
        metrics::counter!("parley_events_appended_total").increment(1);
        let event = AppendedEvent {
            position,
            transaction_id: parse_xid(&tx)?,
            version,
            event_id: e.event_id,
            recorded_at,
        };
        return Ok(Appended { events: vec![event] });
    }
    let metadatas = vec![&metadata; n];
    let rows: Result<Vec<(i64, String, i64)>, sqlx::Error> = sqlx::query_as(
        "SELECT out_position, out_transaction_id::text, out_version \
         FROM parley_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(append.account_id)
    .bind(&append.stream.stream_type)
    .bind(&append.stream.stream_id)
    .bind(append.expected_version)
    .bind(&ids)
    .bind(&types)
    .bind(&versions)
    .bind(&payloads)
    .bind(&metadatas)
    .bind(recorded_at)
    .bind(&canonical)
    .fetch_all(&mut *conn)
    .await;
    let rows = rows.map_err(|e| classify(e, append))?;
    let events = rows
        .into_iter()
        .zip(&ids)
        .map(|((position, tx, version), event_id)| {
            Ok(AppendedEvent {
                position,
                transaction_id: parse_xid(&tx)?,
                version,
                event_id: *event_id,
                recorded_at,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    metrics::counter!("parley_events_appended_total").increment(n as u64);
    Ok(Appended { events })
}

/// Turns the append function's SQLSTATEs into typed errors.
fn classify(e: sqlx::Error, append: &StreamAppend) -> StoreError {
    let Some(db) = e.as_database_error() else {
        return StoreError::Database(e);
    };
    let stream_type = append.stream.stream_type.clone();
    let stream_id = append.stream.stream_id.clone();
    match db.code().as_deref() {
        Some("PL409") => {
            // DETAIL carries the actual version; the message is the fallback.
            let actual = db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|pg| pg.detail())
                .and_then(|d| d.parse().ok())
                .unwrap_or(-1);
            StoreError::WrongExpectedVersion {
                stream_type,
                stream_id,
                expected: append.expected_version,
                actual,
            }
        }
        Some("PL40R") => StoreError::RetryTransaction { stream_type, stream_id },
        // A unique violation on the stream version cannot happen under the lock, but if it did it
        // would mean exactly this.
        Some("23505") if db.constraint() == Some("events_stream_version_key") => {
            StoreError::WrongExpectedVersion {
                stream_type,
                stream_id,
                expected: append.expected_version,
                actual: -1,
            }
        }
        _ => StoreError::Database(e),
    }
}
