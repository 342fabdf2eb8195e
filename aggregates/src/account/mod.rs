//! The `Account` aggregate: a tenant.

mod aggregate;
mod commands;
mod events;

pub use aggregate::{Account, AccountError};
pub use commands::AccountCommand;
pub use events::AccountEvent;
