//! The write side: commands dispatched onto aggregates in one short transaction each (lock the
//! stream, load snapshot + tail, decide, append with claims, index rows and idempotency record),
//! authorization of commands against their actor, and the application services built on that.

mod cache;
pub mod calls;
mod context;
pub mod creator;
mod dispatcher;
mod error;
mod group_commit;
pub mod jobs;
pub mod password;
pub mod process_managers;
mod rederive;
pub mod services;
pub mod tokens;
mod unit_of_work;
pub mod webhooks;
mod write_side;

pub use context::{Actor, CommandContext};
pub use dispatcher::{with_retry, Dispatcher, Idempotency, Idempotent, Loaded};
pub use error::DispatchError;
pub use group_commit::GroupCommit;
pub use rederive::Rederive;
pub use unit_of_work::{Executed, UnitOfWork};
pub use write_side::{direct_pair_key, WriteSide, DIRECT_PAIR_CLAIM};
