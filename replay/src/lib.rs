//! Audit-log tooling over the log: event queries, an aggregate's state as of a time or version,
//! and verification of every stream's hash chain. Secret fields are redacted in all output.

mod error;
mod events;
mod state;
mod verify;

pub use error::ReplayError;
pub use events::{events, redacted, to_json};
pub use state::{state, AsOf, StateAsOf};
pub use verify::{verify, ChainHead, Problem, ProblemKind, VerifyReport};
