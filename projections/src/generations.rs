//! Generations of a projection's tables: creating them, applying batches to them with a
//! fenced checkpoint, catching one up, and swapping the live one. Building one from zero while
//! the live one serves is [`crate::rebuild`]'s.

use std::str::FromStr;

use std::time::Instant;

use chrono::{DateTime, Utc};
use parley_eventstore::{EventStore, LogCursor, RecordedEvent, ASYNC_COMMIT};
use sqlx::{PgPool, Row};

use crate::error::ProjectionError;
use crate::projection::Projection;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenerationState {
    /// Being filled from zero by a rebuild, beside the live generation.
    Building,
    /// Filled; waiting for the lease holder to catch it up to the head and swap it in.
    Ready,
    /// Serving reads.
    Live,
    /// Replaced; its schema is dropped.
    Retired,
}

impl GenerationState {
    pub fn as_str(self) -> &'static str {
        match self {
            GenerationState::Building => "building",
            GenerationState::Ready => "ready",
            GenerationState::Live => "live",
            GenerationState::Retired => "retired",
        }
    }
}

impl FromStr for GenerationState {
    type Err = ProjectionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "building" => GenerationState::Building,
            "ready" => GenerationState::Ready,
            "live" => GenerationState::Live,
            "retired" => GenerationState::Retired,
            other => return Err(ProjectionError::Unknown(format!("generation state {other}"))),
        })
    }
}

/// One generation's checkpoint row.
#[derive(Clone, Debug)]
pub struct Generation {
    pub name: String,
    pub generation: i32,
    pub version: i32,
    pub state: GenerationState,
    pub cursor: LogCursor,
    pub events_applied: i64,
    pub holder: Option<String>,
    pub last_error: Option<String>,
    pub last_error_position: Option<String>,
    pub error_count: i32,
    pub updated_at: DateTime<Utc>,
}

impl Generation {
    /// The schema holding this generation's tables.
    pub fn schema(&self) -> String {
        schema_name(&self.name, self.generation)
    }
}

pub fn schema_name(name: &str, generation: i32) -> String {
    format!("proj_{name}_g{generation}")
}

const GENERATION_COLUMNS: &str =
    "name, generation, version, state, cursor_tx::text AS cursor_tx, cursor_position, \
     events_applied, holder, last_error, last_error_position, error_count, updated_at";

fn decode(row: &sqlx::postgres::PgRow) -> Result<Generation, ProjectionError> {
    let tx: String = row.try_get("cursor_tx")?;
    let state: String = row.try_get("state")?;
    Ok(Generation {
        name: row.try_get("name")?,
        generation: row.try_get("generation")?,
        version: row.try_get("version")?,
        state: state.parse()?,
        cursor: LogCursor::new(tx.parse().unwrap_or(0), row.try_get("cursor_position")?),
        events_applied: row.try_get("events_applied")?,
        holder: row.try_get("holder")?,
        last_error: row.try_get("last_error")?,
        last_error_position: row.try_get("last_error_position")?,
        error_count: row.try_get("error_count")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Every generation of `name` that is not retired, oldest first.
pub(crate) async fn load(pool: &PgPool, name: &str) -> Result<Vec<Generation>, ProjectionError> {
    let rows = sqlx::query(&format!(
        "SELECT {GENERATION_COLUMNS} FROM projection_generations \
         WHERE name = $1 AND state <> 'retired' ORDER BY generation"
    ))
    .bind(name)
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode).collect()
}

/// Every generation of every projection that is not retired.
pub(crate) async fn load_all(pool: &PgPool) -> Result<Vec<Generation>, ProjectionError> {
    let rows = sqlx::query(&format!(
        "SELECT {GENERATION_COLUMNS} FROM projection_generations WHERE state <> 'retired' ORDER BY name, generation"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode).collect()
}

/// Creates the next generation of `projection`: its schema, its tables, its checkpoint row at
/// the start of the log. A `Live` generation (the very first one) gets the public views at once.
pub(crate) async fn create(
    pool: &PgPool,
    projection: &dyn Projection,
    state: GenerationState,
    holder: Option<&str>,
) -> Result<Generation, ProjectionError> {
    let name = projection.name();
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('parley-projection-ddl/' || $1, 0))")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    if state == GenerationState::Live {
        // Another process may have created the first live generation while we waited for the lock.
        let existing: Option<(i32,)> = sqlx::query_as(
            "SELECT generation FROM projection_generations WHERE name = $1 AND state = 'live'",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((generation,)) = existing {
            tx.commit().await?;
            return load(pool, name)
                .await?
                .into_iter()
                .find(|g| g.generation == generation)
                .ok_or_else(|| ProjectionError::Unknown(format!("{name} generation {generation}")));
        }
    }
    let (next,): (i32,) =
        sqlx::query_as("SELECT coalesce(max(generation), 0) + 1 FROM projection_generations WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
    // The generation retired by the previous rebuild has served its purpose now.
    let retired: Vec<(i32,)> = sqlx::query_as(
        "DELETE FROM projection_generations WHERE name = $1 AND state = 'retired' RETURNING generation",
    )
    .bind(name)
    .fetch_all(&mut *tx)
    .await?;
    for (generation,) in retired {
        run_script(&mut tx, &format!("DROP SCHEMA IF EXISTS {} CASCADE", schema_name(name, generation)))
            .await?;
    }
    let schema = schema_name(name, next);
    let setup = format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; SET LOCAL search_path TO {schema};"
    );
    run_script(&mut tx, &setup).await?;
    run_script(&mut tx, projection.schema()).await?;
    sqlx::query("SET LOCAL search_path TO DEFAULT").execute(&mut *tx).await?;
    sqlx::query(
        "INSERT INTO projection_generations (name, generation, version, state, holder) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(name)
    .bind(next)
    .bind(projection.version())
    .bind(state.as_str())
    .bind(holder)
    .execute(&mut *tx)
    .await?;
    if state == GenerationState::Live {
        point_views(&mut tx, projection, &schema).await?;
    }
    tx.commit().await?;
    let generations = load(pool, name).await?;
    generations
        .into_iter()
        .find(|g| g.generation == next)
        .ok_or_else(|| ProjectionError::Unknown(format!("{name} generation {next}")))
}

/// Runs several statements (simple query protocol). Through `Executor::execute`, whose boxed
/// future is `Send` for any lifetime: `raw_sql` trips a rustc higher-ranked lifetime limitation
/// inside spawned futures.
pub(crate) async fn run_script(conn: &mut sqlx::PgConnection, sql: &str) -> Result<(), ProjectionError> {
    sqlx::Executor::execute(conn, sql).await?;
    Ok(())
}

async fn point_views(
    conn: &mut sqlx::PgConnection,
    projection: &dyn Projection,
    schema: &str,
) -> Result<(), ProjectionError> {
    for table in projection.tables() {
        let sql = format!("DROP VIEW IF EXISTS public.{table}; CREATE VIEW public.{table} AS SELECT * FROM {schema}.{table};");
        run_script(conn, &sql).await?;
    }
    Ok(())
}

/// Applies `events` (the next ones after `generation.cursor`, in commit-safe order) to the
/// generation, and moves its checkpoint, in one transaction. The checkpoint write is a
/// compare-and-set on the previous cursor and, for live and ready generations, on the lease
/// holder: a runner that lost its lease cannot write.
#[tracing::instrument(skip_all, fields(projection = %generation.name, generation = generation.generation, events = events.len()))]
pub(crate) async fn apply_batch(
    pool: &PgPool,
    projection: &dyn Projection,
    generation: &mut Generation,
    holder: Option<&str>,
    events: &[RecordedEvent],
) -> Result<(), ProjectionError> {
    let Some(last) = events.last() else { return Ok(()) };
    let started = Instant::now();
    let handled: Vec<&RecordedEvent> = events.iter().filter(|e| projection.handles(&e.event_type)).collect();
    for e in events.iter().filter(|e| !parley_aggregates::catalog::is_event_type(&e.event_type)) {
        unknown_event_type(projection.name(), &e.event_type);
    }
    // A batch the projection ignores entirely only moves the checkpoint: one statement.
    let mut tx = if handled.is_empty() { None } else { Some(pool.begin().await?) };
    if let Some(tx) = tx.as_mut() {
        // A read model is the log's to redo: its batch commits without waiting for the WAL
        // flush (see `ASYNC_COMMIT`); rows and checkpoint stay one transaction, lost together.
        sqlx::query(
            "SELECT set_config('search_path', $1, true), set_config('synchronous_commit', 'off', true)",
        )
        .bind(format!("{}, public", generation.schema()))
        .execute(&mut **tx)
        .await?;
        if generation.state == GenerationState::Building {
            projection.fill(tx, &handled).await?;
        } else {
            projection.apply(tx, &handled).await?;
        }
    }
    let next = last.cursor();
    let checkpoint = format!(
        "UPDATE projection_generations SET cursor_tx = $3::text::xid8, cursor_position = $4, \
           events_applied = events_applied + $5, last_error = NULL, last_error_position = NULL, \
           error_count = 0, updated_at = now() \
         WHERE name = $1 AND generation = $2 AND cursor_tx = $6::text::xid8 AND cursor_position = $7 \
           AND ($8::text IS NULL OR holder = $8){}",
        if tx.is_none() { format!(" AND {ASYNC_COMMIT}") } else { String::new() }
    );
    let checkpoint = sqlx::query(&checkpoint)
        .bind(&generation.name)
        .bind(generation.generation)
        .bind(next.transaction_id_text())
        .bind(next.position)
        .bind(events.len() as i64)
        .bind(generation.cursor.transaction_id_text())
        .bind(generation.cursor.position)
        .bind(holder);
    let moved = match tx.as_mut() {
        Some(tx) => checkpoint.execute(&mut **tx).await?,
        None => checkpoint.execute(pool).await?,
    }
    .rows_affected();
    if moved != 1 {
        return Err(ProjectionError::Fenced(generation.name.clone()));
    }
    if let Some(tx) = tx {
        tx.commit().await?;
    }
    generation.cursor = next;
    generation.events_applied += events.len() as i64;
    let labels = [("projection", generation.name.clone())];
    metrics::counter!("parley_projection_events_total", &labels).increment(events.len() as u64);
    metrics::histogram!("parley_projection_batch_seconds", &labels).record(started.elapsed().as_secs_f64());
    metrics::gauge!("parley_projection_position", &labels).set(next.position as f64);
    let lag = (Utc::now() - last.recorded_at).num_milliseconds().max(0) as f64 / 1000.0;
    metrics::gauge!("parley_projection_lag_seconds", &labels).set(lag);
    Ok(())
}

/// Records a failed batch on the generation, for status pages and metrics.
pub(crate) async fn record_error(
    pool: &PgPool,
    generation: &Generation,
    error: &ProjectionError,
    at: Option<LogCursor>,
) -> Result<i32, ProjectionError> {
    let (count,): (i32,) = sqlx::query_as(
        "UPDATE projection_generations SET last_error = $3, last_error_position = $4, \
           error_count = error_count + 1, updated_at = now() \
         WHERE name = $1 AND generation = $2 RETURNING error_count",
    )
    .bind(&generation.name)
    .bind(generation.generation)
    .bind(error.to_string())
    .bind(at.map(|c| c.to_string()))
    .fetch_one(pool)
    .await?;
    metrics::counter!("parley_projection_errors_total", "projection" => generation.name.clone()).increment(1);
    Ok(count)
}

/// Applies every event after the generation's cursor, batch by batch, until the head. The next
/// batch is read from the log while the current one is written (two backends at work, and the
/// decoding beside them), so a rebuild waits on its reads only once.
pub(crate) async fn catch_up(
    store: &EventStore,
    projection: &dyn Projection,
    generation: &mut Generation,
    holder: Option<&str>,
    batch_size: i64,
    mut on_batch: impl FnMut(&Generation),
) -> Result<(), ProjectionError> {
    let mut events = store.read_all_after(generation.cursor, batch_size).await?;
    while let Some(last) = events.last() {
        let (applied, next) = tokio::join!(
            apply_batch(store.pool(), projection, generation, holder, &events),
            store.read_all_after(last.cursor(), batch_size)
        );
        applied?;
        on_batch(generation);
        events = next?;
    }
    Ok(())
}

/// Swaps `ready` in as the live generation: the old one is retired and the public views point
/// at the new one, in one transaction. The retired generation's tables are kept until the next
/// rebuild, so an operator can compare the two or point the views back.
pub(crate) async fn swap(
    pool: &PgPool,
    projection: &dyn Projection,
    ready: &Generation,
    holder: &str,
) -> Result<(), ProjectionError> {
    let mut tx = pool.begin().await?;
    let old: Option<(i32,)> = sqlx::query_as(
        "UPDATE projection_generations SET state = 'retired', updated_at = now() \
         WHERE name = $1 AND state = 'live' RETURNING generation",
    )
    .bind(&ready.name)
    .fetch_optional(&mut *tx)
    .await?;
    let promoted = sqlx::query(
        "UPDATE projection_generations SET state = 'live', updated_at = now() \
         WHERE name = $1 AND generation = $2 AND state = 'ready' AND holder = $3",
    )
    .bind(&ready.name)
    .bind(ready.generation)
    .bind(holder)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if promoted != 1 {
        return Err(ProjectionError::Fenced(ready.name.clone()));
    }
    point_views(&mut tx, projection, &ready.schema()).await?;
    tx.commit().await?;
    tracing::info!(projection = %ready.name, retired = ?old.map(|(g,)| g), "swapped generations");
    tracing::info!(projection = %ready.name, generation = ready.generation, "new generation is live");
    Ok(())
}

/// An event of a type this build does not know (written by a newer version during a rolling
/// upgrade): skipped like any type the projection does not handle, counted, and logged once per
/// projection and type, so an operator sees an old node reading a new log.
fn unknown_event_type(projection: &'static str, event_type: &str) {
    use std::collections::HashSet;
    use std::sync::{LazyLock, Mutex};
    static SEEN: LazyLock<Mutex<HashSet<(&'static str, String)>>> = LazyLock::new(Default::default);
    metrics::counter!("parley_unknown_events_total", "projection" => projection, "event_type" => event_type.to_owned())
        .increment(1);
    let first = SEEN.lock().map(|mut seen| seen.insert((projection, event_type.to_owned()))).unwrap_or(false);
    if first {
        tracing::warn!(projection, event_type, "skipping events of a type this version does not know");
    }
}
