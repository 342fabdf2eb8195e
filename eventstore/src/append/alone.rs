//! Appends that are a transaction of their own: one autocommit statement each, without the
//! stream lock and the age check, which only a writer inside a transaction needs (see
//! [`append_alone`]).

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    append, appended_one, canonical_bytes, classify, parse_xid, Appended, AppendedEvent, Columns,
    StreamAppend,
};
use crate::error::StoreError;
use crate::hash;

/// Appends as one autocommit statement of its own (the connection must not be in a
/// transaction), without the stream lock and the age check when they cannot matter, and so
/// without a function call: the common appends cost what an `INSERT` costs.
///
/// A statement outside a transaction gets its transaction id when it first writes, after it
/// took its snapshot: a head it read was written by an older transaction, so commit-safe order
/// follows the stream's versions without the lock. A second writer of a version is refused by
/// the `(stream_type, stream_id, version)` key, waiting for the first to commit or roll back.
/// Writers inside a transaction, which may hold their transaction id already, still lock the
/// stream and check the head's age (`parley_append_one`, `parley_append_all`).
///
/// - A new stream (expected version 0): the chain starts from zero, so it is computed here and
///   the events are inserted as they are.
/// - One event on an existing stream: inserted from the head row at the expected version, whose
///   hash it chains from; no row there appends nothing, which is a conflict.
/// - Several events on an existing stream: `parley_append_all`.
pub(crate) async fn append_alone(
    conn: &mut PgConnection,
    append: &StreamAppend,
    now: DateTime<Utc>,
) -> Result<Appended, StoreError> {
    let n = append.events.len();
    if n == 0 {
        return Ok(Appended { events: Vec::new() });
    }
    if append.expected_version == 0 {
        let mut appended = insert_new_streams(conn, &[append], now).await?;
        return Ok(appended.pop().unwrap_or(Appended { events: Vec::new() }));
    }
    if n > 1 {
        return self::append(conn, append, now).await;
    }
    let recorded_at: DateTime<Utc> = now.trunc_subsecs(6);
    let metadata = append.metadata.to_json();
    let canonical = canonical_bytes(append, 0, &metadata, recorded_at);
    let e = &append.events[0];
    // Onto a stream: chained from its head row at the expected version, by the server; scalar
    // parameters, which it decodes for less than arrays.
    let row: Result<Option<(i64, String, i64)>, sqlx::Error> = bind_event(
        sqlx::query_as(
            "INSERT INTO events (event_id, account_id, stream_type, stream_id, version, event_type, \
                                 schema_version, payload, metadata, recorded_at, prev_hash, hash) \
             SELECT $1, $2, $3, $4, h.version + 1, $6, $7, $8, $9, $10, h.hash, sha256(h.hash || $11) \
               FROM events h WHERE h.stream_type = $3 AND h.stream_id = $4 AND h.version = $5 \
             RETURNING position, transaction_id::text, version",
        ),
        append,
        &metadata,
        recorded_at,
    )
    .bind(&canonical)
    .fetch_optional(&mut *conn)
    .await;
    let row = match row {
        Ok(Some(row)) => row,
        Ok(None) => return Err(refused(conn, append).await),
        Err(e) => match classify(e, append) {
            StoreError::WrongExpectedVersion { .. } => return Err(refused(conn, append).await),
            other => return Err(other),
        },
    };
    appended_one(e, row, recorded_at)
}

/// Binds `$1`–`$10` of a one-event append: the event, its stream and expected version, its
/// metadata and time.
fn bind_event<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    append: &'q StreamAppend,
    metadata: &'q serde_json::Value,
    recorded_at: DateTime<Utc>,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    let e = &append.events[0];
    query
        .bind(e.event_id)
        .bind(append.account_id)
        .bind(&append.stream.stream_type)
        .bind(&append.stream.stream_id)
        .bind(append.expected_version)
        .bind(&e.event_type)
        .bind(e.schema_version)
        .bind(&e.payload)
        .bind(metadata)
        .bind(recorded_at)
}

/// Up to this many events, streams are started by a multi-row `VALUES` of scalar parameters (one
/// statement text per count, each prepared once per connection); more go as arrays.
const SCALAR_ROWS: usize = 4;

/// Starts every stream of `appends` (each at expected version 0) by one autocommit `INSERT`,
/// the chains computed here from the zero hash (see [`append_alone`]): the version key refuses
/// the whole statement when any of the streams exists.
pub(crate) async fn insert_new_streams(
    conn: &mut PgConnection,
    appends: &[&StreamAppend],
    now: DateTime<Utc>,
) -> Result<Vec<Appended>, StoreError> {
    debug_assert!(appends.iter().all(|a| a.expected_version == 0), "only new streams");
    let recorded_at: DateTime<Utc> = now.trunc_subsecs(6);
    let c = Columns::of(appends, recorded_at);
    if c.ids.is_empty() {
        return Ok(appends.iter().map(|_| Appended { events: Vec::new() }).collect());
    }
    let n = c.ids.len();
    // Each stream's chain, from the zero hash.
    let (mut prevs, mut hashes): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
        (Vec::with_capacity(n), Vec::with_capacity(n));
    for (k, canonical) in c.canonical.iter().enumerate() {
        let prev = if c.expected[k] == 0 { vec![0u8; 32] } else { hashes[k - 1].clone() };
        hashes.push(hash::chain(&prev, canonical));
        prevs.push(prev);
    }
    const COLUMNS: &str = "INSERT INTO events (event_id, account_id, stream_type, stream_id, version, \
                           event_type, schema_version, payload, metadata, recorded_at, prev_hash, hash) ";
    const RETURNING: &str = " RETURNING event_id, position, transaction_id::text, version";
    let rows: Result<Vec<(Uuid, i64, String, i64)>, sqlx::Error> = if n <= SCALAR_ROWS {
        // A few rows: scalar parameters, which the server decodes for less than arrays.
        let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(COLUMNS);
        query.push_values(0..n, |mut row, k| {
            row.push_bind(c.ids[k])
                .push_bind(c.accounts[k])
                .push_bind(c.stream_types[k])
                .push_bind(c.stream_ids[k])
                .push_bind(c.expected[k] + 1)
                .push_bind(c.types[k])
                .push_bind(c.schema_versions[k])
                .push_bind(c.payloads[k])
                .push_bind(&c.metadata[k])
                .push_bind(recorded_at)
                .push_bind(&prevs[k])
                .push_bind(&hashes[k]);
        });
        query.push(RETURNING);
        query.build_query_as().fetch_all(&mut *conn).await
    } else {
        sqlx::query_as(&format!(
            "{COLUMNS} \
             SELECT u.event_id, u.account_id, u.stream_type, u.stream_id, u.expected + 1, u.event_type, \
                    u.schema_version, u.payload, u.metadata, $12, u.prev, u.hash \
               FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::int[], \
                           $8::jsonb[], $9::jsonb[], $10::bytea[], $11::bytea[]) \
                    WITH ORDINALITY AS u(event_id, account_id, stream_type, stream_id, expected, event_type, \
                                         schema_version, payload, metadata, prev, hash, ord) \
              ORDER BY u.ord{RETURNING}"
        ))
        .bind(&c.ids)
        .bind(&c.accounts)
        .bind(&c.stream_types)
        .bind(&c.stream_ids)
        .bind(&c.expected)
        .bind(&c.types)
        .bind(&c.schema_versions)
        .bind(&c.payloads)
        .bind(&c.metadata)
        .bind(&prevs)
        .bind(&hashes)
        .bind(recorded_at)
        .fetch_all(&mut *conn)
        .await
    };
    let rows = match rows {
        Ok(rows) if rows.len() == n => rows,
        Ok(rows) => return Err(StoreError::Decode(format!("{} of {n} events appended", rows.len()))),
        Err(e) => {
            let duplicate = e.as_database_error().is_some_and(|db| {
                db.code().as_deref() == Some("23505") && db.constraint() == Some("events_stream_version_key")
            });
            if !duplicate {
                return Err(StoreError::from(e));
            }
            // Which stream exists now (another writer started it first)?
            let existing: Option<(String, String)> = sqlx::query_as(
                "SELECT s.t, s.i FROM unnest($1::text[], $2::text[]) AS s(t, i) \
                  WHERE EXISTS (SELECT 1 FROM events e WHERE e.stream_type = s.t AND e.stream_id = s.i) LIMIT 1",
            )
            .bind(&c.stream_types)
            .bind(&c.stream_ids)
            .fetch_optional(&mut *conn)
            .await?;
            let refused_one = existing
                .and_then(|(t, i)| {
                    appends.iter().find(|a| a.stream.stream_type == t && a.stream.stream_id == i)
                })
                .unwrap_or(&appends[0]);
            return Err(refused(conn, refused_one).await);
        }
    };
    let mut placed: std::collections::HashMap<Uuid, (i64, String, i64)> =
        rows.into_iter().map(|(id, position, tx, version)| (id, (position, tx, version))).collect();
    let mut out = Vec::with_capacity(appends.len());
    for append in appends {
        let events = append
            .events
            .iter()
            .map(|e| {
                let (position, tx, version) = placed
                    .remove(&e.event_id)
                    .ok_or_else(|| StoreError::Decode(format!("event {} was not appended", e.event_id)))?;
                Ok(AppendedEvent {
                    position,
                    transaction_id: parse_xid(&tx)?,
                    version,
                    event_id: e.event_id,
                    recorded_at,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        out.push(Appended { events });
    }
    metrics::counter!("parley_events_appended_total").increment(n as u64);
    Ok(out)
}

/// The conflict an append without the lock met (no head at its expected version, or another
/// writer of the same version first), with where the stream is now, as the locking path says.
async fn refused(conn: &mut PgConnection, append: &StreamAppend) -> StoreError {
    let actual: Result<(i64,), sqlx::Error> = sqlx::query_as(
        "SELECT coalesce(max(version), 0) FROM events WHERE stream_type = $1 AND stream_id = $2",
    )
    .bind(&append.stream.stream_type)
    .bind(&append.stream.stream_id)
    .fetch_one(&mut *conn)
    .await;
    match actual {
        Ok((actual,)) => StoreError::WrongExpectedVersion {
            stream_type: append.stream.stream_type.clone(),
            stream_id: append.stream.stream_id.clone(),
            expected: append.expected_version,
            actual,
        },
        Err(e) => StoreError::Database(e),
    }
}
