//! The read side: the projection runtime (checkpoints, leases, rebuilds) and every read model.
//!
//! A projection is a named, versioned consumer of the log. Each batch updates its tables and its
//! checkpoint in one transaction. Its tables live in one schema per generation
//! (`proj_<name>_g<n>`); public views named after the tables point at the live generation, so a
//! rebuild fills a new generation beside the live one and the swap is one transaction.

mod error;
mod generations;
mod projection;
pub mod read_models;
mod reads;
mod rebuild;
mod runner;
mod status;

pub use error::ProjectionError;
pub use generations::{schema_name, Generation, GenerationState};
pub use projection::{Decisions, Projection, Projections};
pub use reads::{ReadModel, Reads, MAX_WAIT};
pub use rebuild::{ensure_live, rebuild, RebuildProgress};
pub use runner::{LeaseOptions, Runner, StepOutcome};
pub use status::{events_between, list, positions_in, wait_for, ProjectionStatus};
