//! Audit-log tooling over the log: event queries, an aggregate's state as of a time or version,
//! verification of every stream's hash chain, and the portable copy of the log (export and
//! import). Secret fields are redacted in all output meant to be read (never in the portable
//! copy, which must reproduce every hash).

mod chain;
mod error;
mod events;
pub mod portable;
mod state;
mod verify;

pub use error::ReplayError;
pub use events::{events, redacted, to_json};
pub use state::{state, AsOf, StateAsOf};
pub use verify::{verify, ChainHead, Problem, ProblemKind, VerifyReport};
