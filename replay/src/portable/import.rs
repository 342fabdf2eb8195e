//! Reading a portable log into an empty store: every line checked as it is read (JSON, order,
//! each stream's hash chain), inserted in batches inside one transaction with the write side's
//! rows derived again beside them, and the whole file checked against its header before the
//! commit. Any refusal rolls everything back: a store gets the whole log or nothing.

use std::collections::HashMap;
use std::path::Path;

use parley_commands::Rederive;
use parley_eventstore::hash::CanonicalEvent;
use parley_eventstore::{EventStore, RecordedEvent};
use serde_json::Value;
use sqlx::PgConnection;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use super::{head_key, EventLine, Header, PortableError, Progress, FORMAT, VERSION};
use crate::chain::{follow, Link, Tip};

/// Events inserted per statement.
const BATCH: usize = 2000;

/// What an import wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Imported {
    pub events: u64,
    pub streams: u64,
    /// The highest position imported (0 for an empty log): new appends continue after it.
    pub last_position: i64,
}

/// Imports the file at `path` (see [`import`]).
pub async fn import_file(
    store: &EventStore,
    path: &Path,
    progress: &dyn Progress,
) -> Result<Imported, PortableError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|source| PortableError::Read { path: path.display().to_string(), source })?;
    import(store, tokio::io::BufReader::with_capacity(1 << 20, file), progress).await
}

/// Imports a portable log into `store`, which must hold no events: positions, event ids,
/// payloads, metadata and hashes as in the file, in one transaction that commits only once every
/// line was checked and the file matched its header.
#[tracing::instrument(skip_all)]
pub async fn import(
    store: &EventStore,
    input: impl AsyncBufRead + Unpin,
    progress: &dyn Progress,
) -> Result<Imported, PortableError> {
    let mut lines = input.lines();
    let header = header(next_line(&mut lines, 1).await?)?;
    progress.total(header.events);
    let mut tx = store.pool().begin().await?;
    ensure_empty(&mut tx).await?;
    let mut check = Check { header: &header, tips: HashMap::new(), lines: 1, events: 0, last_position: 0 };
    let mut batch: Vec<EventLine> = Vec::with_capacity(BATCH);
    let mut rederive = Rederive::new();
    while let Some(text) = next_line(&mut lines, check.lines + 1).await? {
        check.lines += 1;
        let line = parse(&text, check.lines)?;
        check.follow(&line)?;
        batch.push(line);
        if batch.len() == BATCH {
            write_batch(&mut tx, store, &mut rederive, &mut batch).await?;
            progress.advance(BATCH as u64);
        }
    }
    let rest = batch.len() as u64;
    write_batch(&mut tx, store, &mut rederive, &mut batch).await?;
    rederive.finish(&mut tx).await?;
    progress.advance(rest);
    check.against_header()?;
    // New appends continue after the imported positions; process managers that already have a
    // checkpoint here start after the imported log (they act on what happens from now on).
    if check.last_position > 0 {
        sqlx::query("SELECT setval(pg_get_serial_sequence('events', 'position'), $1)")
            .bind(check.last_position)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("UPDATE consumer_checkpoints SET cursor_tx = pg_current_xact_id(), cursor_position = $1")
        .bind(check.last_position)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let imported = Imported {
        events: check.events,
        streams: check.tips.len() as u64,
        last_position: check.last_position,
    };
    tracing::info!(events = imported.events, streams = imported.streams, "imported the log");
    Ok(imported)
}

async fn next_line(
    lines: &mut tokio::io::Lines<impl AsyncBufRead + Unpin>,
    number: u64,
) -> Result<Option<String>, PortableError> {
    lines.next_line().await.map_err(|e| PortableError::NotJson { line: number, detail: e.to_string() })
}

/// The header, refused unless it is a parley-log header of the version this build reads.
fn header(first: Option<String>) -> Result<Header, PortableError> {
    let first = first.ok_or_else(|| PortableError::NotParleyLog("the file is empty".into()))?;
    let value: Value = serde_json::from_str(&first).map_err(|e| {
        PortableError::NotParleyLog(if e.is_eof() {
            "its header line is cut short".into()
        } else {
            format!("its first line is not a JSON header ({e})")
        })
    })?;
    if value.get("format").and_then(Value::as_str) != Some(FORMAT) {
        let found = value.get("format").map_or_else(|| "none".to_owned(), Value::to_string);
        return Err(PortableError::NotParleyLog(format!("its header's format is {found}, not \"{FORMAT}\"")));
    }
    match value.get("version") {
        Some(v) if v.as_u64() == Some(VERSION) => {}
        Some(v) => return Err(PortableError::UnsupportedVersion(v.clone())),
        None => return Err(PortableError::NotParleyLog("its header has no version".into())),
    }
    serde_json::from_value(value)
        .map_err(|e| PortableError::NotParleyLog(format!("its header is malformed ({e})")))
}

fn parse(text: &str, line: u64) -> Result<EventLine, PortableError> {
    serde_json::from_str(text).map_err(|e| {
        if e.is_eof() {
            PortableError::Truncated { line }
        } else {
            PortableError::NotJson { line, detail: e.to_string() }
        }
    })
}

/// Refuses a store that holds events or the rows derived from them, after locking out appends
/// until the import commits or rolls back (and any concurrent import).
async fn ensure_empty(conn: &mut PgConnection) -> Result<(), PortableError> {
    sqlx::query("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE").execute(&mut *conn).await?;
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM (SELECT 1 FROM events LIMIT 1000000) e")
        .fetch_one(&mut *conn)
        .await?;
    if events > 0 {
        let n =
            if events == 1_000_000 { "a million events or more".into() } else { format!("{events} events") };
        return Err(PortableError::NotEmpty(n));
    }
    for table in [
        "claims",
        "user_facts",
        "message_facts",
        "reaction_facts",
        "invitation_facts",
        "api_key_facts",
        "session_tokens",
    ] {
        let (any,): (bool,) =
            sqlx::query_as(&format!("SELECT EXISTS (SELECT 1 FROM {table})")).fetch_one(&mut *conn).await?;
        if any {
            return Err(PortableError::NotEmpty(format!("{table} has rows")));
        }
    }
    Ok(())
}

/// What has been checked so far.
struct Check<'h> {
    header: &'h Header,
    /// Each stream's chain so far: memory grows with the number of streams, not of events.
    tips: HashMap<(String, String), Tip>,
    lines: u64,
    events: u64,
    last_position: i64,
}

impl Check<'_> {
    /// Checks one line: one more than the header announces, out of position order, or not the
    /// next link of its stream's chain is refused.
    fn follow(&mut self, line: &EventLine) -> Result<(), PortableError> {
        let damaged = |detail: String| PortableError::Damaged {
            line: self.lines,
            stream: head_key(&line.stream_type, &line.stream_id),
            version: line.version,
            detail,
        };
        self.events += 1;
        if self.events > self.header.events {
            return Err(damaged(format!(
                "the header announces {} events and this is one more (a line is repeated or added)",
                self.header.events
            )));
        }
        if line.position <= self.last_position {
            return Err(damaged(format!(
                "position {} does not come after the previous line's {} (lines are reordered or repeated)",
                line.position, self.last_position
            )));
        }
        let prev_hash = hex::decode(&line.prev_hash).map_err(|_| damaged("prev_hash is not hex".into()))?;
        let hash = hex::decode(&line.hash).map_err(|_| damaged("hash is not hex".into()))?;
        let tip =
            self.tips.entry((line.stream_type.clone(), line.stream_id.clone())).or_insert_with(Tip::genesis);
        let link = Link {
            event: CanonicalEvent {
                stream_type: &line.stream_type,
                stream_id: &line.stream_id,
                version: line.version,
                event_type: &line.event_type,
                schema_version: line.schema_version,
                event_id: line.event_id,
                account_id: line.account_id,
                payload: &line.payload,
                metadata: &line.metadata,
                recorded_at: line.recorded_at,
            },
            position: line.position,
            prev_hash: &prev_hash,
            hash: &hash,
        };
        if let Some((kind, detail)) = follow(tip, &link).into_iter().next() {
            return Err(damaged(format!("{detail} ({kind:?})")));
        }
        self.last_position = line.position;
        Ok(())
    }

    /// The whole file against its header: the count, and every stream's head.
    fn against_header(&self) -> Result<(), PortableError> {
        if self.events != self.header.events {
            return Err(PortableError::Mismatch(format!(
                "it holds {} events, its header announces {} (lines are missing or the file is truncated)",
                self.events, self.header.events
            )));
        }
        for ((stream_type, stream_id), tip) in &self.tips {
            let key = head_key(stream_type, stream_id);
            match self.header.heads.get(&key) {
                None => return Err(PortableError::Mismatch(format!("stream {key} is not among its heads"))),
                Some(head) if *head != hex::encode(&tip.hash) => {
                    return Err(PortableError::Mismatch(format!(
                        "stream {key} ends at version {} with another hash than its head",
                        tip.version
                    )))
                }
                Some(_) => {}
            }
        }
        if self.header.heads.len() != self.tips.len() {
            let missing = self.header.heads.keys().find(|k| {
                k.split_once('/').is_none_or(|(t, i)| !self.tips.contains_key(&(t.to_owned(), i.to_owned())))
            });
            return Err(PortableError::Mismatch(format!(
                "stream {} of its heads has no events in it",
                missing.map_or("?", String::as_str)
            )));
        }
        Ok(())
    }
}

/// Inserts a batch of checked lines (positions kept) and derives their write-side rows.
async fn write_batch(
    conn: &mut PgConnection,
    store: &EventStore,
    rederive: &mut Rederive,
    batch: &mut Vec<EventLine>,
) -> Result<(), PortableError> {
    if batch.is_empty() {
        return Ok(());
    }
    let n = batch.len();
    let mut positions = Vec::with_capacity(n);
    let mut event_ids = Vec::with_capacity(n);
    let mut accounts = Vec::with_capacity(n);
    let mut stream_types = Vec::with_capacity(n);
    let mut stream_ids = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut event_types = Vec::with_capacity(n);
    let mut schema_versions = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut metadata = Vec::with_capacity(n);
    let mut recorded = Vec::with_capacity(n);
    let mut prev_hashes = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n);
    let mut derived = Vec::with_capacity(n);
    for line in batch.drain(..) {
        // Checked by `Check::follow` already.
        prev_hashes.push(hex::decode(&line.prev_hash).unwrap_or_default());
        hashes.push(hex::decode(&line.hash).unwrap_or_default());
        let (schema_version, payload) =
            store.upcasters().upcast(&line.event_type, line.schema_version, line.payload.clone());
        derived.push(RecordedEvent {
            position: line.position,
            transaction_id: 0,
            event_id: line.event_id,
            account_id: line.account_id,
            stream_type: line.stream_type.clone(),
            stream_id: line.stream_id.clone(),
            version: line.version,
            event_type: line.event_type.clone(),
            schema_version,
            payload,
            metadata: line.metadata.clone(),
            recorded_at: line.recorded_at,
        });
        positions.push(line.position);
        event_ids.push(line.event_id);
        accounts.push(line.account_id);
        stream_types.push(line.stream_type);
        stream_ids.push(line.stream_id);
        versions.push(line.version);
        event_types.push(line.event_type);
        schema_versions.push(line.schema_version);
        payloads.push(line.payload);
        metadata.push(line.metadata);
        recorded.push(line.recorded_at);
    }
    sqlx::query(
        "INSERT INTO events (position, event_id, account_id, stream_type, stream_id, version, event_type, \
                             schema_version, payload, metadata, recorded_at, prev_hash, hash) \
         OVERRIDING SYSTEM VALUE \
         SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::bigint[], \
                              $7::text[], $8::int[], $9::jsonb[], $10::jsonb[], $11::timestamptz[], \
                              $12::bytea[], $13::bytea[])",
    )
    .bind(&positions)
    .bind(&event_ids)
    .bind(&accounts)
    .bind(&stream_types)
    .bind(&stream_ids)
    .bind(&versions)
    .bind(&event_types)
    .bind(&schema_versions)
    .bind(&payloads)
    .bind(&metadata)
    .bind(&recorded)
    .bind(&prev_hashes)
    .bind(&hashes)
    .execute(&mut *conn)
    .await?;
    rederive.feed(conn, derived).await?;
    Ok(())
}
