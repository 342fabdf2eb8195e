//! The `Session` aggregate: a login, from start to logout or revocation.

mod aggregate;
mod commands;
mod events;

pub use aggregate::{Session, SessionError};
pub use commands::SessionCommand;
pub use events::SessionEvent;

/// The reason a session ends when an already-rotated refresh token is presented again.
pub const REFRESH_TOKEN_REUSED: &str = "refresh_token_reused";
