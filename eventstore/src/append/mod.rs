//! Appending to a stream: locked, with an expected version, hash-chained, atomic. An append
//! that is a transaction of its own needs no lock: [`alone`].

mod alone;

pub(crate) use alone::{append_alone, insert_new_streams};

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
/// `parley_append_one` (one event; `parley_append_all` for several) takes the stream lock, then
/// the transaction id, checks the expected version and that the head was not written by a
/// younger transaction, and chains the hashes.
pub(crate) async fn append(
    conn: &mut PgConnection,
    append: &StreamAppend,
    now: DateTime<Utc>,
) -> Result<Appended, StoreError> {
    if let [e] = append.events.as_slice() {
        // The common case, through the scalar single-event function.
        let recorded_at: DateTime<Utc> = now.trunc_subsecs(6);
        let metadata = append.metadata.to_json();
        let canonical = canonical_bytes(append, 0, &metadata, recorded_at);
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
        .bind(&canonical)
        .fetch_one(&mut *conn)
        .await;
        let row = row.map_err(|error| classify(error, append))?;
        return appended_one(e, row, recorded_at);
    }
    let mut all = append_all(conn, &[append], &[], now).await?;
    Ok(all.pop().unwrap_or(Appended { events: Vec::new() }))
}

/// One event appended, from the row its statement returned (position, transaction id, version).
fn appended_one(
    e: &NewEvent,
    (position, tx, version): (i64, String, i64),
    recorded_at: DateTime<Utc>,
) -> Result<Appended, StoreError> {
    metrics::counter!("parley_events_appended_total").increment(1);
    let event = AppendedEvent {
        position,
        transaction_id: parse_xid(&tx)?,
        version,
        event_id: e.event_id,
        recorded_at,
    };
    Ok(Appended { events: vec![event] })
}

/// The events of several appends as the columns of one statement, in call order.
struct Columns<'a> {
    ids: Vec<Uuid>,
    accounts: Vec<Uuid>,
    stream_types: Vec<&'a str>,
    stream_ids: Vec<&'a str>,
    /// Each event's stream version before it.
    expected: Vec<i64>,
    types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    payloads: Vec<&'a serde_json::Value>,
    metadata: Vec<serde_json::Value>,
    /// What each event's hash covers (see [`hash::canonical_bytes`]).
    canonical: Vec<Vec<u8>>,
}

impl<'a> Columns<'a> {
    fn of(appends: &[&'a StreamAppend], recorded_at: DateTime<Utc>) -> Self {
        let n: usize = appends.iter().map(|a| a.events.len()).sum();
        let mut c = Columns {
            ids: Vec::with_capacity(n),
            accounts: Vec::with_capacity(n),
            stream_types: Vec::with_capacity(n),
            stream_ids: Vec::with_capacity(n),
            expected: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            schema_versions: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            canonical: Vec::with_capacity(n),
        };
        for append in appends {
            let metadata = append.metadata.to_json();
            for (i, e) in append.events.iter().enumerate() {
                c.canonical.push(canonical_bytes(append, i, &metadata, recorded_at));
                c.ids.push(e.event_id);
                c.accounts.push(append.account_id);
                c.stream_types.push(append.stream.stream_type.as_str());
                c.stream_ids.push(append.stream.stream_id.as_str());
                c.expected.push(append.expected_version + i as i64);
                c.types.push(e.event_type.as_str());
                c.schema_versions.push(e.schema_version);
                c.payloads.push(&e.payload);
                c.metadata.push(metadata.clone());
            }
        }
        c
    }
}

/// Appends to several streams in one round trip, each at its expected version, in the order
/// given. `parley_append_all` locks every stream of the call first, sorted as [`lock_streams`]
/// sorts them, and only then takes the transaction id. `heads[k]`, when given, is the event the
/// stream of `appends[k]` must have at its head (the version alone is checked otherwise).
pub(crate) async fn append_all(
    conn: &mut PgConnection,
    appends: &[&StreamAppend],
    heads: &[Option<Uuid>],
    now: DateTime<Utc>,
) -> Result<Vec<Appended>, StoreError> {
    let recorded_at: DateTime<Utc> = now.trunc_subsecs(6);
    let c = Columns::of(appends, recorded_at);
    let n = c.ids.len();
    if n == 0 {
        return Ok(appends.iter().map(|_| Appended { events: Vec::new() }).collect());
    }
    // The head each append's first event must follow, when named.
    let mut expected_heads: Vec<Option<Uuid>> = Vec::with_capacity(n);
    for (k, append) in appends.iter().enumerate() {
        expected_heads
            .extend((0..append.events.len()).map(|i| heads.get(k).copied().flatten().filter(|_| i == 0)));
    }
    let rows: Result<Vec<(i64, String, i64)>, sqlx::Error> = sqlx::query_as(
        "SELECT out_position, out_transaction_id::text, out_version \
         FROM parley_append_all($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&c.accounts)
    .bind(&c.stream_types)
    .bind(&c.stream_ids)
    .bind(&c.expected)
    .bind(&c.ids)
    .bind(&c.types)
    .bind(&c.schema_versions)
    .bind(&c.payloads)
    .bind(&c.metadata)
    .bind(recorded_at)
    .bind(&c.canonical)
    .bind(&expected_heads)
    .fetch_all(&mut *conn)
    .await;
    let rows = rows.map_err(|error| match appends {
        [one] => classify(error, one),
        _ => match refused_append(&error, appends) {
            Some(append) => classify(error, append),
            None => StoreError::from(error),
        },
    })?;
    if rows.len() != n {
        return Err(StoreError::Decode(format!("{} of {n} events appended", rows.len())));
    }
    let mut rows = rows.into_iter().zip(c.ids);
    let mut out = Vec::with_capacity(appends.len());
    for append in appends {
        let events = rows
            .by_ref()
            .take(append.events.len())
            .map(|((position, tx, version), event_id)| {
                Ok(AppendedEvent {
                    position,
                    transaction_id: parse_xid(&tx)?,
                    version,
                    event_id,
                    recorded_at,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        out.push(Appended { events });
    }
    metrics::counter!("parley_events_appended_total").increment(n as u64);
    Ok(out)
}

/// The canonical bytes of event `i` of `append`, hashed into the chain.
fn canonical_bytes(
    append: &StreamAppend,
    i: usize,
    metadata: &serde_json::Value,
    recorded_at: DateTime<Utc>,
) -> Vec<u8> {
    let e = &append.events[i];
    hash::canonical_bytes(&CanonicalEvent {
        stream_type: &append.stream.stream_type,
        stream_id: &append.stream.stream_id,
        version: append.expected_version + 1 + i as i64,
        event_type: &e.event_type,
        schema_version: e.schema_version,
        event_id: e.event_id,
        account_id: append.account_id,
        payload: &e.payload,
        metadata,
        recorded_at,
    })
}

/// Turns the append function's SQLSTATEs into typed errors.
/// The append of a call to several streams that a version or age check refused: the function
/// names its stream first in the message (`stream <type>/<id> is at version ...`, `stream
/// <type>/<id> was last written ...`; types have no `/`).
fn refused_append<'a>(e: &sqlx::Error, appends: &[&'a StreamAppend]) -> Option<&'a StreamAppend> {
    let db = e.as_database_error()?;
    if !matches!(db.code().as_deref(), Some("PL409" | "PL40R")) {
        return None;
    }
    let named = db.message().strip_prefix("stream ")?;
    appends.iter().copied().find(|a| {
        named
            .strip_prefix(a.stream.stream_type.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|rest| rest.strip_prefix(a.stream.stream_id.as_str()))
            .is_some_and(|rest| rest.starts_with(" is at version ") || rest.starts_with(" was last written "))
    })
}

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
