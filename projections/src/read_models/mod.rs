//! Every read model: real relational tables with the indexes their queries need.

pub mod analytics;
pub mod api_keys;
pub mod calls;
pub mod conversations;
pub mod creator;
pub mod invitations;
pub mod messages;
pub mod notifications;
pub mod roles;
pub mod users;
pub mod webhooks;

use std::sync::Arc;

pub use analytics::AnalyticsProjection;
pub use api_keys::ApiKeysProjection;
pub use calls::CallsProjection;
pub use conversations::ConversationsProjection;
pub use invitations::InvitationsProjection;
pub use messages::MessagesProjection;
pub use notifications::NotificationsProjection;
pub use roles::RolesProjection;
pub use users::UsersProjection;
pub use webhooks::WebhooksProjection;

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
        Arc::new(WebhooksProjection),
        Arc::new(CallsProjection),
        Arc::new(AnalyticsProjection),
        Arc::new(creator::CreatorProjection),
    ]
}

/// Decodes a domain event from a recorded one, naming the event on failure.
pub(crate) fn decode<E: cqrs_es::DomainEvent>(
    event: &parley_eventstore::RecordedEvent,
) -> Result<E, crate::ProjectionError> {
    parley_aggregates::from_payload(&event.event_type, &event.payload)
        .map_err(|e| crate::ProjectionError::apply(event, e))
}

#[cfg(test)]
mod tests {
    use parley_aggregates::catalog;

    use super::all;

    /// A new event type must be handled or ignored by every read model, by name: none skips
    /// it by omission.
    #[test]
    fn every_read_model_decides_about_every_event_type() {
        for projection in all() {
            let decided = projection.decides();
            for event_type in catalog::event_types() {
                let handled = decided.handles.contains(&event_type);
                let ignored = decided.ignores(event_type);
                assert!(
                    handled ^ ignored,
                    "{} must either handle or ignore {event_type} (handles: {handled}, ignores: {ignored})",
                    projection.name()
                );
            }
            for named in decided.handles.iter().chain(decided.ignores) {
                assert!(
                    catalog::is_event_type(named),
                    "{} names {named}, which is no event type",
                    projection.name()
                );
            }
            for stream in decided.ignores_streams {
                assert!(
                    catalog::is_stream_type(stream),
                    "{} names {stream}, which is no stream type",
                    projection.name()
                );
            }
        }
    }
}
