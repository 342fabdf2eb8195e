//! Rebuilding a projection as a job (`POST /api/v1/admin/projections/{name}/rebuild`): the new
//! generation catches up from the log while the live one serves, then takes over; its progress
//! shows in the projections' list as it goes.

use async_trait::async_trait;
use parley_eventstore::EventStore;
use parley_jobs::{Handler, Job, NewJob, QueueName};
use parley_projections::{rebuild, LeaseOptions, Projections};
use serde_json::json;

pub const REBUILD: &str = "projections.rebuild";

/// The job that rebuilds `name`; one at a time per projection.
pub fn job(name: &str) -> NewJob {
    NewJob::new(REBUILD, json!({"name": name}))
        .queue(QueueName::Low)
        .max_attempts(3)
        .unique(format!("{REBUILD}:{name}"), std::time::Duration::from_secs(60))
}

#[derive(Clone)]
pub struct Rebuilds {
    pub store: EventStore,
    pub projections: Projections,
    pub lease: LeaseOptions,
}

#[async_trait]
impl Handler for Rebuilds {
    fn kind(&self) -> &'static str {
        REBUILD
    }

    async fn run(&self, job: &Job) -> Result<(), parley_jobs::Failure> {
        let name = job.args.get("name").and_then(|n| n.as_str()).unwrap_or_default();
        let projection = self.projections.get(name).ok_or_else(|| format!("no projection named {name:?}"))?;
        let generation =
            rebuild(&self.store, projection, self.lease.clone(), |_| {}).await.map_err(|e| e.to_string())?;
        tracing::info!(name, generation = generation.generation, "projection rebuilt");
        Ok(())
    }
}
