//! The `Conversation` aggregate: a direct or group conversation, its members and its messages.
//!
//! Its state stays bounded however many messages it holds: per-message facts a decision needs
//! (author, deleted) live in write-side index rows, not here (DESIGN.md, invariant 4).

mod aggregate;
mod commands;
mod events;

pub use aggregate::{Conversation, ConversationError, MemberRole};
pub use commands::ConversationCommand;
pub use events::ConversationEvent;
