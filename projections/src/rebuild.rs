//! Rebuilding a projection from the log: a new generation is built beside the live one (which
//! keeps serving), handed to the lease holder to catch up and swap in; and, at start, making sure
//! every projection has a live generation of its current shape.

use std::sync::Arc;
use std::time::Duration;

use parley_eventstore::{EventStore, LogCursor};

use crate::error::ProjectionError;
use crate::generations::{catch_up, create, load, Generation, GenerationState};
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
    let mut generation = create(pool, projection.as_ref(), GenerationState::Building, None).await?;
    catch_up(store, projection.as_ref(), &mut generation, None, lease.batch_size, |g| {
        on_progress(&RebuildProgress {
            generation: g.generation,
            events_applied: g.events_applied,
            cursor: g.cursor,
            phase: "building",
        })
    })
    .await?;
    sqlx::query(
        "UPDATE projection_generations SET state = 'ready', updated_at = now() \
         WHERE name = $1 AND generation = $2 AND state = 'building'",
    )
    .bind(projection.name())
    .bind(generation.generation)
    .execute(pool)
    .await?;
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
