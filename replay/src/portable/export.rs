//! Writing the log out: one consistent snapshot of it (a repeatable-read transaction), streamed
//! row by row in position order, so memory stays flat however long the log is.

use std::io::Write;
use std::path::Path;

use futures::TryStreamExt;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::{head_key, EventLine, PortableError, Progress, FORMAT, VERSION};

/// What an export wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exported {
    pub events: u64,
    pub streams: u64,
}

/// The streams exported: all, or every stream holding an event of one account, whole.
const ALL: &str = "TRUE";
const OF_ACCOUNT: &str =
    "(stream_type, stream_id) IN (SELECT stream_type, stream_id FROM events WHERE account_id = $1)";

/// Writes the log (or one account's streams) to `out` in the portable format.
#[tracing::instrument(skip_all, fields(account = ?account))]
pub async fn export(
    pool: &PgPool,
    account: Option<Uuid>,
    out: &mut impl Write,
    progress: &dyn Progress,
) -> Result<Exported, PortableError> {
    let which = if account.is_some() { OF_ACCOUNT } else { ALL };
    let mut tx = pool.begin().await?;
    // The header's count and heads and the lines must describe the same log, however many
    // appends commit meanwhile.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    let (events,): (i64,) =
        bind(sqlx::query_as(&format!("SELECT count(*) FROM events WHERE {which}")), account)
            .fetch_one(&mut *tx)
            .await?;
    let events = events.max(0) as u64;
    progress.total(events);
    let io = |source| PortableError::Write { path: "the export".into(), source };
    write!(out, "{{\"format\":\"{FORMAT}\",\"version\":{VERSION},\"events\":{events},\"heads\":{{")
        .map_err(io)?;
    let streams = write_heads(&mut tx, which, account, out).await?;
    out.write_all(b"}}\n").map_err(io)?;

    let sql = format!(
        "SELECT position, event_id, account_id, stream_type, stream_id, version, event_type, schema_version, \
                payload, metadata, recorded_at, prev_hash, hash \
         FROM events WHERE {which} ORDER BY position"
    );
    let query = sqlx::query(&sql);
    let query = match account {
        Some(a) => query.bind(a),
        None => query,
    };
    let mut rows = query.fetch(&mut *tx);
    let mut written = 0u64;
    while let Some(row) = rows.try_next().await? {
        serde_json::to_writer(&mut *out, &line(&row)?).map_err(|e| io(e.into()))?;
        out.write_all(b"\n").map_err(io)?;
        written += 1;
        if written.is_multiple_of(1000) {
            progress.advance(1000);
        }
    }
    drop(rows);
    progress.advance(written % 1000);
    tx.commit().await?;
    out.flush().map_err(io)?;
    tracing::info!(events = written, streams, "exported the log");
    Ok(Exported { events: written, streams })
}

/// Exports into the file at `path`, whole or not at all: the lines go to a temporary file in the
/// same folder, renamed over `path` at the end, and removed on any failure.
pub async fn export_to_file(
    pool: &PgPool,
    account: Option<Uuid>,
    path: &Path,
    progress: &dyn Progress,
) -> Result<Exported, PortableError> {
    let shown = path.display().to_string();
    let write_error = |source| PortableError::Write { path: shown.clone(), source };
    let name = path.file_name().ok_or_else(|| {
        write_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file"))
    })?;
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let temp = folder.join(format!(".{}.{}.partial", name.to_string_lossy(), std::process::id()));
    let file = std::fs::File::create(&temp).map_err(write_error)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let written = async {
        let exported = export(pool, account, &mut out, progress).await?;
        let file = out.into_inner().map_err(|e| write_error(e.into_error()))?;
        file.sync_all().map_err(write_error)?;
        std::fs::rename(&temp, path).map_err(write_error)?;
        Ok(exported)
    }
    .await;
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.map_err(|e| match e {
        PortableError::Write { source, .. } => write_error(source),
        other => other,
    })
}

fn bind<'q, O>(
    query: sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>,
    account: Option<Uuid>,
) -> sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments> {
    match account {
        Some(a) => query.bind(a),
        None => query,
    }
}

/// Writes `"<stream>":"<hash>"` for every stream's last event, streamed; returns how many.
async fn write_heads(
    tx: &mut Transaction<'_, Postgres>,
    which: &str,
    account: Option<Uuid>,
    out: &mut impl Write,
) -> Result<u64, PortableError> {
    let sql = format!(
        "SELECT DISTINCT ON (stream_type, stream_id) stream_type, stream_id, hash FROM events WHERE {which} \
         ORDER BY stream_type, stream_id, version DESC"
    );
    let query = sqlx::query(&sql);
    let query = match account {
        Some(a) => query.bind(a),
        None => query,
    };
    let mut rows = query.fetch(&mut **tx);
    let io = |source| PortableError::Write { path: "the export".into(), source };
    let mut streams = 0u64;
    while let Some(row) = rows.try_next().await? {
        if streams > 0 {
            out.write_all(b",").map_err(io)?;
        }
        let key = head_key(row.try_get("stream_type")?, row.try_get("stream_id")?);
        let hash: Vec<u8> = row.try_get("hash")?;
        serde_json::to_writer(&mut *out, &key).map_err(|e| io(e.into()))?;
        write!(out, ":\"{}\"", hex::encode(hash)).map_err(io)?;
        streams += 1;
    }
    Ok(streams)
}

fn line(row: &PgRow) -> Result<EventLine, sqlx::Error> {
    Ok(EventLine {
        position: row.try_get("position")?,
        event_id: row.try_get("event_id")?,
        account_id: row.try_get("account_id")?,
        stream_type: row.try_get("stream_type")?,
        stream_id: row.try_get("stream_id")?,
        version: row.try_get("version")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        payload: row.try_get("payload")?,
        metadata: row.try_get("metadata")?,
        recorded_at: row.try_get("recorded_at")?,
        prev_hash: hex::encode(row.try_get::<Vec<u8>, _>("prev_hash")?),
        hash: hex::encode(row.try_get::<Vec<u8>, _>("hash")?),
    })
}
