//! The one list of stored names: every stream type and every event type of the domain. Replay,
//! the audit API, the cable and the projections take them from here; each projection declares,
//! for every event type listed here, whether it handles or ignores it (a test fails when one
//! decides nothing about a new type).

use cqrs_es::Aggregate;

use crate::account::{Account, AccountEvent};
use crate::analytics::{AnalyticsDay, AnalyticsDayEvent};
use crate::api_key::{ApiKey, ApiKeyEvent};
use crate::call::{Call, CallEvent};
use crate::conversation::{Conversation, ConversationEvent};
use crate::creator::{
    AccessGrant, AccessGrantEvent, Experience, ExperienceEvent, Space, SpaceEvent, Stream, StreamEvent,
};
use crate::inbox::{Inbox, InboxEvent};
use crate::invitation::{Invitation, InvitationEvent};
use crate::role::{Role, RoleEvent};
use crate::session::{Session, SessionEvent};
use crate::user::{User, UserEvent};
use crate::webhook::{IncomingWebhook, IncomingWebhookEvent, WebhookSubscription, WebhookSubscriptionEvent};

/// The `event_type`s an event enum records, one per variant (checked by each aggregate's
/// `stored_names_are_the_event_types` test against its variants' serde tags).
pub trait EventTypes {
    const TYPES: &'static [&'static str];
}

/// Every stream type with the event types recorded on it, in the order the domain grew.
pub const STREAMS: &[(&str, &[&str])] = &[
    (Account::TYPE, AccountEvent::TYPES),
    (User::TYPE, UserEvent::TYPES),
    (Session::TYPE, SessionEvent::TYPES),
    (Invitation::TYPE, InvitationEvent::TYPES),
    (Conversation::TYPE, ConversationEvent::TYPES),
    (Role::TYPE, RoleEvent::TYPES),
    (ApiKey::TYPE, ApiKeyEvent::TYPES),
    (Inbox::TYPE, InboxEvent::TYPES),
    (WebhookSubscription::TYPE, WebhookSubscriptionEvent::TYPES),
    (IncomingWebhook::TYPE, IncomingWebhookEvent::TYPES),
    (Call::TYPE, CallEvent::TYPES),
    (AnalyticsDay::TYPE, AnalyticsDayEvent::TYPES),
    (Space::TYPE, SpaceEvent::TYPES),
    (Experience::TYPE, ExperienceEvent::TYPES),
    (Stream::TYPE, StreamEvent::TYPES),
    (AccessGrant::TYPE, AccessGrantEvent::TYPES),
];

/// Every stream type.
pub fn stream_types() -> impl Iterator<Item = &'static str> {
    STREAMS.iter().map(|(stream_type, _)| *stream_type)
}

/// Every event type of the domain.
pub fn event_types() -> impl Iterator<Item = &'static str> {
    STREAMS.iter().flat_map(|(_, types)| types.iter().copied())
}

/// Whether `name` is a stream type of the domain.
pub fn is_stream_type(name: &str) -> bool {
    stream_types().any(|t| t == name)
}

/// Whether `name` is an event type of the domain.
pub fn is_event_type(name: &str) -> bool {
    event_types().any(|t| t == name)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_stored_name_is_listed_once() {
        let streams: HashSet<_> = stream_types().collect();
        assert_eq!(streams.len(), STREAMS.len());
        let events: Vec<_> = event_types().collect();
        let unique: HashSet<_> = events.iter().collect();
        assert_eq!(unique.len(), events.len(), "an event type is listed twice: {events:?}");
        assert!(is_event_type("MessagePosted") && !is_event_type("MessageSent"));
        assert!(is_stream_type("Inbox") && !is_stream_type("inbox"));
    }
}
