//! Rebuilding a projection from the log: a new generation is built beside the live one (which
//! keeps serving), handed to the lease holder to catch up and swap in; at start, making sure
//! every projection has a live generation of its current shape; and retiring what rebuilds that
//! died left behind.

use std::sync::Arc;
use std::time::Duration;

use parley_eventstore::{EventStore, LogCursor};
use sqlx::{Connection, PgConnection, PgPool};

use crate::error::ProjectionError;
use crate::generations::{catch_up, create, load, run_script, schema_name, Generation, GenerationState};
use crate::projection::Projection;
use crate::runner::{LeaseOptions, Runner};

/// Progress of a rebuild, reported after every batch.
#[derive(Clone, Debug)]
pub struct RebuildProgress {
    pub generation: i32,
    pub events_applied: i64,
    pub cursor: LogCursor,
    pub phase: &'static str,
}

/// Rebuilds `projection` from the start of the log into a new generation while the live one
/// keeps serving, then hands it over to the lease holder, which catches it up and swaps it in.
/// If no runner holds the lease, the rebuild takes the lease and swaps itself. Returns once the
/// new generation serves reads.
pub async fn rebuild(
    store: &EventStore,
    projection: Arc<dyn Projection>,
    lease: LeaseOptions,
    mut on_progress: impl FnMut(&RebuildProgress),
) -> Result<Generation, ProjectionError> {
    let pool = store.pool();
    let lock = RebuildLock::take(pool, projection.name()).await?;
    let mut generation = create(pool, projection.as_ref(), GenerationState::Building, None).await?;
    let deferred = defer_indexes(pool, projection.as_ref(), &generation).await?;
    catch_up(store, projection.as_ref(), &mut generation, None, lease.batch_size, |g| {
        on_progress(&RebuildProgress {
            generation: g.generation,
            events_applied: g.events_applied,
            cursor: g.cursor,
            phase: "building",
        })
    })
    .await?;
    if !deferred.is_empty() {
        on_progress(&RebuildProgress {
            generation: generation.generation,
            events_applied: generation.events_applied,
            cursor: generation.cursor,
            phase: "indexing",
        });
        build_indexes(pool, &generation, &deferred).await?;
    }
    sqlx::query(
        "UPDATE projection_generations SET state = 'ready', updated_at = now() \
         WHERE name = $1 AND generation = $2 AND state = 'building'",
    )
    .bind(projection.name())
    .bind(generation.generation)
    .execute(pool)
    .await?;
    lock.release().await;
    // Wake the lease holder, wherever it runs, to catch the new generation up and swap it in.
    store.committed();
    on_progress(&RebuildProgress {
        generation: generation.generation,
        events_applied: generation.events_applied,
        cursor: generation.cursor,
        phase: "handing over",
    });
    let mut runner = Runner::new(store.clone(), projection.clone(), lease);
    loop {
        let current = load(pool, projection.name()).await?;
        match current.iter().find(|g| g.generation == generation.generation) {
            Some(g) if g.state == GenerationState::Live => return Ok(g.clone()),
            Some(_) => {}
            None => {
                return Err(ProjectionError::Unknown(format!(
                    "{} generation {}",
                    projection.name(),
                    generation.generation
                )))
            }
        }
        // Nobody serves this projection: take the lease and swap ourselves.
        if runner.acquire().await? {
            runner.hand_over().await?;
            runner.release().await;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A rebuild's hold on its projection (see [`REBUILD_LOCK`]): a session lock on a connection of
/// its own, so that it goes when the rebuild's process or connection dies, however it dies.
struct RebuildLock {
    conn: PgConnection,
}

impl RebuildLock {
    /// Waits for any other rebuild of `name` to finish, then retires what dead ones left.
    async fn take(pool: &PgPool, name: &str) -> Result<Self, ProjectionError> {
        let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
        let (free,): (bool,) = sqlx::query_as(&format!("SELECT pg_try_advisory_lock({REBUILD_LOCK})"))
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
        if !free {
            tracing::info!(
                projection = name,
                "another rebuild of this projection is running: waiting for it"
            );
            sqlx::query(&format!("SELECT pg_advisory_lock({REBUILD_LOCK})"))
                .bind(name)
                .execute(&mut conn)
                .await?;
        }
        retire_abandoned(&mut conn, name).await?;
        Ok(Self { conn })
    }

    /// Ends the session, and the lock with it.
    async fn release(self) {
        if let Err(e) = self.conn.close().await {
            tracing::debug!(error = %e, "closing a rebuild's lock connection failed; the server drops it");
        }
    }
}

/// Drops the projection's deferred indexes from the generation a rebuild is about to fill, and
/// returns the statements that build them again.
async fn defer_indexes(
    pool: &PgPool,
    projection: &dyn Projection,
    generation: &Generation,
) -> Result<Vec<String>, ProjectionError> {
    let names = projection.deferred_indexes();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let schema = generation.schema();
    let found: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_indexdef(c.oid) FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind IN ('i', 'I') AND c.relname = ANY($2)",
    )
    .bind(&schema)
    .bind(names)
    .fetch_all(pool)
    .await?;
    if let Some(missing) = names.iter().find(|n| !found.iter().any(|(f, _)| f == *n)) {
        return Err(ProjectionError::Unknown(format!(
            "{} defers index {missing}, which its schema does not create",
            projection.name()
        )));
    }
    let drop: Vec<String> = found.iter().map(|(name, _)| format!("{schema}.{name}")).collect();
    sqlx::Executor::execute(pool, format!("DROP INDEX {}", drop.join(", ")).as_str()).await?;
    Ok(found.into_iter().map(|(_, definition)| definition).collect())
}

/// Builds the indexes [`defer_indexes`] dropped, once the generation holds the whole log: one
/// sort each instead of an insert into each for every row.
#[tracing::instrument(skip_all, fields(projection = %generation.name, generation = generation.generation, indexes = definitions.len()))]
async fn build_indexes(
    pool: &PgPool,
    generation: &Generation,
    definitions: &[String],
) -> Result<(), ProjectionError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('maintenance_work_mem', '128MB', true)").execute(&mut *tx).await?;
    for definition in definitions {
        sqlx::Executor::execute(&mut *tx, definition.as_str()).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Makes sure every projection has a live generation of its current shape, so its tables exist
/// before anything reads them (a node serves queries from its first request, before its runners
/// take their leases). A live generation of an older version (its tables or their meaning changed)
/// is rebuilt from the log first; one of a newer version (a newer node already upgraded it) is
/// left serving.
pub async fn ensure_live(
    store: &EventStore,
    projections: &[Arc<dyn Projection>],
    lease: LeaseOptions,
) -> Result<(), ProjectionError> {
    let pool = store.pool();
    for projection in projections {
        let generations = load(pool, projection.name()).await?;
        match generations.iter().find(|g| g.state == GenerationState::Live) {
            None => {
                create(pool, projection.as_ref(), GenerationState::Live, None).await?;
            }
            Some(live) if live.version < projection.version() => {
                tracing::info!(
                    projection = projection.name(),
                    from = live.version,
                    to = projection.version(),
                    "read model changed shape: rebuilding it from the log before serving"
                );
                rebuild(store, projection.clone(), lease.clone(), |_| {}).await?;
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The session lock a rebuild of a projection holds from before it creates its generation until
/// that generation is filled (`$1`: the projection's name). Rebuilds of one projection run one
/// after another, and a `building` generation whose rebuild's lock is free was left by a
/// rebuild that died.
const REBUILD_LOCK: &str = "hashtextextended('parley-rebuild/' || $1, 0)";

/// Retires the generations of `name` that a rebuild left `building` when it died (killed,
/// failed, its node gone), dropping their schemas and saying so in `last_error`: unless a
/// rebuild of `name` is running, in which case nothing is abandoned. Called by every rebuild
/// (holding the lock, on its own connection) before it creates its generation, and by every
/// runner taking a projection's lease.
pub(crate) async fn retire_abandoned(
    conn: &mut sqlx::PgConnection,
    name: &str,
) -> Result<(), ProjectionError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('parley-projection-ddl/' || $1, 0))")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    let (free,): (bool,) = sqlx::query_as(&format!("SELECT pg_try_advisory_xact_lock({REBUILD_LOCK})"))
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
    if !free {
        return Ok(());
    }
    let abandoned: Vec<(i32,)> = sqlx::query_as(
        "UPDATE projection_generations SET state = 'retired', updated_at = now(), \
           last_error = 'abandoned: the rebuild filling it stopped before it was done' \
         WHERE name = $1 AND state = 'building' RETURNING generation",
    )
    .bind(name)
    .fetch_all(&mut *tx)
    .await?;
    for (generation,) in &abandoned {
        run_script(&mut tx, &format!("DROP SCHEMA IF EXISTS {} CASCADE", schema_name(name, *generation)))
            .await?;
    }
    tx.commit().await?;
    for (generation,) in abandoned {
        tracing::warn!(projection = name, generation, "retired a generation a rebuild left unfinished");
        metrics::counter!("parley_projection_generations_abandoned_total", "projection" => name.to_owned())
            .increment(1);
    }
    Ok(())
}
