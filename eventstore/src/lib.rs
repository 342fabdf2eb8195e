//! The event log: append with an expected version, read a stream, read and tail all events in
//! commit-safe order, snapshots, the per-stream hash chain, claims, idempotency records and
//! wake-ups. Generic: it knows no domain type; streams, event types and payloads are strings and
//! JSON to it.

mod append;
mod checkpointed;
pub mod claims;
mod consumer;
mod cursor;
pub mod db;
mod error;
mod event;
pub mod hash;
pub mod idempotency;
mod read;
pub mod snapshots;
mod store;
mod tail;
mod transaction;
mod upcast;
mod window;

pub use append::{Appended, AppendedEvent, StreamAppend, StreamHead};
pub use checkpointed::{drive, Checkpointed, Lease, Pace, Progress, ASYNC_COMMIT};
pub use consumer::{Consumer, ConsumerRunner, ConsumerStep};
pub use cursor::{CursorError, LogCursor};
pub use error::{is_unavailable, StoreError};
pub use event::{ActorKind, Metadata, NewEvent, RecordedEvent, StreamKey};
pub use read::EventFilter;
pub use store::{Clock, CommitObserver, EventStore, LogObserver};
pub use tail::{Tail, WakeSubscription, HORIZON_POLL_MAX, HORIZON_POLL_MIN, MIN_POLL_INTERVAL};
pub use transaction::StoreTransaction;
pub use upcast::{Upcaster, Upcasters};
pub use window::SharedReads;
