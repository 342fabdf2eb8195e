//! Every read model: real relational tables with the indexes their queries need.

mod api_keys;
mod conversations;
mod invitations;
mod messages;
pub mod notifications;
mod roles;
mod users;

use std::sync::Arc;

pub use api_keys::ApiKeysProjection;
pub use conversations::ConversationsProjection;
pub use invitations::InvitationsProjection;
pub use messages::MessagesProjection;
pub use notifications::NotificationsProjection;
pub use roles::RolesProjection;
pub use users::UsersProjection;

use crate::projection::Projection;

pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(UsersProjection),
        Arc::new(ConversationsProjection),
        Arc::new(MessagesProjection),
        Arc::new(InvitationsProjection),
        Arc::new(RolesProjection),
        Arc::new(ApiKeysProjection),
        Arc::new(NotificationsProjection),
    ]
}

/// Decodes a domain event from a recorded one, naming the event on failure.
pub(crate) fn decode<E: cqrs_es::DomainEvent>(
    event: &parley_eventstore::RecordedEvent,
) -> Result<E, crate::ProjectionError> {
    parley_aggregates::from_payload(&event.event_type, &event.payload)
        .map_err(|e| crate::ProjectionError::apply(event, e))
}
