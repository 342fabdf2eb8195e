//! Application services: the use cases the API calls, each one unit of work on the log.

mod conversations;
mod invitations;
mod registration;
pub mod roles;
mod sessions;
mod users;

pub use crate::write_side::EMAIL_CLAIM;
pub use conversations::ConversationIdempotency;
pub use invitations::{InvitationIssued, INVITATION_TTL_DAYS};
pub use registration::{Registered, Registration};
pub use sessions::{LoggedIn, SessionStarted};
pub use users::{Deactivated, ProfileChanges, ProfileUpdated, RolesAssigned, USER_DEACTIVATED};

use parley_aggregates::values::ValueError;

use crate::dispatcher::Dispatcher;
use crate::error::DispatchError;
use crate::group_commit::GroupCommit;
use crate::password::PasswordHasher;
use parley_aggregates::conversation::Conversation;

/// The write side's use cases.
#[derive(Clone)]
pub struct Commands {
    dispatcher: Dispatcher,
    /// Posts (without an idempotency key) are committed in groups.
    posts: GroupCommit<Conversation>,
    passwords: PasswordHasher,
    /// A password hash for unknown emails, made once.
    dummy: std::sync::Arc<tokio::sync::OnceCell<String>>,
}

impl Commands {
    pub fn new(dispatcher: Dispatcher, passwords: PasswordHasher) -> Self {
        Self { posts: GroupCommit::new(dispatcher.clone()), dispatcher, passwords, dummy: Default::default() }
    }

    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    pub fn passwords(&self) -> &PasswordHasher {
        &self.passwords
    }
}

/// Attaches the field name to a value that did not parse.
pub(crate) fn field<T>(field: &'static str, parsed: Result<T, ValueError>) -> Result<T, DispatchError> {
    parsed.map_err(|e| DispatchError::Invalid { field, message: e.to_string() })
}
