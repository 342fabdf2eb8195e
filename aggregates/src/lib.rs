//! The pure domain: aggregates, their commands, events and errors. No IO.
//!
//! Stored names are forever: every `stream_type` is an aggregate's `TYPE` constant and every
//! `event_type` is a `#[serde(rename)]` literal checked against `DomainEvent::event_type` by
//! tests, never a Rust type name a refactor could change.

pub mod account;
pub mod analytics;
pub mod api_key;
pub mod call;
pub mod catalog;
pub mod conversation;
pub mod creator;
mod error;
pub mod inbox;
pub mod invitation;
mod payload;
pub mod permissions;
pub mod role;
pub mod secrets;
pub mod session;
pub mod user;
pub mod values;
pub mod webhook;

pub use error::DomainError;
pub use payload::{from_payload, to_payload, PayloadError};
