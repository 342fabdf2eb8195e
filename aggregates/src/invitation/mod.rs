//! The `Invitation` aggregate: an offer to join an account with a role.

mod aggregate;
mod commands;
mod events;

pub use aggregate::{Invitation, InvitationError};
pub use commands::InvitationCommand;
pub use events::InvitationEvent;
