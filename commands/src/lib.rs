//! The write side: commands dispatched onto aggregates in one short transaction each (lock the
//! stream, load snapshot + tail, decide, append with claims, index rows and idempotency record),
//! authorization of commands against their actor, and the application services built on that.

mod cache;
mod context;
mod error;
mod group_commit;
pub mod password;
pub mod services;
pub mod tokens;
mod unit_of_work;
mod write_side;

pub use context::{Actor, CommandContext};
pub use error::DispatchError;
pub use group_commit::GroupCommit;
pub use unit_of_work::{with_retry, Dispatcher, Executed, Idempotency, Idempotent, Loaded, UnitOfWork};
pub use write_side::WriteSide;
