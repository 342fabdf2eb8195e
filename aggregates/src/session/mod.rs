//! The `Session` aggregate: a login, from start to logout or revocation.

mod aggregate;
mod commands;
mod events;

pub use aggregate::{Session, SessionError};
pub use commands::SessionCommand;
pub use events::SessionEvent;
