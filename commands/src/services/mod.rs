//! Application services: the use cases the API calls, each one unit of work on the log.

mod analytics;
mod api_keys;
mod conversations;
mod invitations;
mod messages;
mod notifications;
mod registration;
pub mod roles;
mod sessions;
mod users;

pub use crate::write_side::EMAIL_CLAIM;
pub use api_keys::{ApiKeyIssued, API_KEY_PREFIX};
pub use conversations::{ConversationIdempotency, DirectStarted};
pub use invitations::{InvitationIssued, INVITATION_TTL_DAYS};
pub use messages::Reacted;
pub use notifications::InboxIdempotency;
pub use registration::{Registered, Registration};
pub use sessions::{LoggedIn, SessionStarted};
pub use users::{Deactivated, ProfileChanges, ProfileUpdated, RolesAssigned, USER_DEACTIVATED};

use parley_aggregates::permissions::Permission;
use parley_aggregates::values::ValueError;

use crate::context::CommandContext;
use crate::dispatcher::Dispatcher;
use crate::error::DispatchError;
use crate::group_commit::GroupCommit;
use crate::password::PasswordHasher;
use parley_aggregates::conversation::Conversation;

/// The write side's use cases.
#[derive(Clone)]
pub struct Commands {
    dispatcher: Dispatcher,
    /// Posts and read marks (without an idempotency key) are committed in groups.
    grouped: GroupCommit<Conversation>,
    passwords: PasswordHasher,
    /// A password hash for unknown emails, made once.
    dummy: std::sync::Arc<tokio::sync::OnceCell<String>>,
}

impl Commands {
    pub fn new(dispatcher: Dispatcher, passwords: PasswordHasher) -> Self {
        Self {
            grouped: GroupCommit::new(dispatcher.clone()),
            dispatcher,
            passwords,
            dummy: Default::default(),
        }
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

/// Parses permission names; every one must be in the registry, and the actor must hold it (no
/// one grants what they do not have).
pub(crate) fn grantable(ctx: &CommandContext, names: &[String]) -> Result<Vec<Permission>, DispatchError> {
    let mut permissions = Vec::with_capacity(names.len());
    for name in names {
        let p = Permission::parse(name).ok_or_else(|| DispatchError::Invalid {
            field: "permissions",
            message: format!("{name:?} is not a permission"),
        })?;
        if !ctx.actor.can(p) {
            return Err(DispatchError::Forbidden(format!("cannot grant {name}, which you do not hold")));
        }
        permissions.push(p);
    }
    Ok(permissions)
}
