//! The `User` aggregate: a person in an account.

mod aggregate;
mod commands;
mod events;

pub use aggregate::{User, UserError, PASSWORD_HISTORY};
pub use commands::UserCommand;
pub use events::UserEvent;
