//! The `Conversation` aggregate: a direct or group conversation, its members and its messages.
//!
//! Its state stays bounded however many messages it holds: per-message facts a decision needs
//! (author, deleted, version; reactions) live in write-side index rows read under the stream's
//! lock and handed to the command, not here (DESIGN.md, invariant 4).

mod aggregate;
mod commands;
mod decide;
mod events;
#[cfg(test)]
mod tests;

pub use aggregate::{Conversation, ConversationError, MemberRole, DIRECT, GROUP, STREAM};
pub use commands::{ConversationCommand, MessageFact, ReactionFact};
pub use events::ConversationEvent;
