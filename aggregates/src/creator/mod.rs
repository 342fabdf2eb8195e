//! The creator platform: an account's `Space`s hold `Experience`s (live streams, courses,
//! communities, consultations, digital products), a live-stream experience schedules `Stream`s,
//! and an `AccessGrant` lets a user of the account see an experience until it ends.

mod access_grant;
mod experience;
mod space;
mod stream;
pub mod values;

pub use access_grant::{AccessGrant, AccessGrantCommand, AccessGrantError, AccessGrantEvent, GrantSource};
pub use experience::{Experience, ExperienceCommand, ExperienceError, ExperienceEvent, ExperienceFields};
pub use space::{Space, SpaceCommand, SpaceError, SpaceEvent};
pub use stream::{Stream, StreamCommand, StreamError, StreamEvent, StreamState};
