//! One subscription of a connection: which events it delivers, from which cursor, and Parley's
//! frame for each.

use parley_aggregates::conversation::ConversationEvent;
use parley_aggregates::secrets::redact;
use parley_eventstore::{EventFilter, LogCursor, RecordedEvent};
use parley_projections::read_models::messages::query::MessageView;
use parley_projections::read_models::notifications;
use serde_json::json;
use uuid::Uuid;

use super::dialect::{Channel, Label};
use crate::live::fanout::Interest;

/// One subscription: which events, and the last one delivered.
pub(super) struct Subscription {
    pub label: Label,
    pub channel: Channel,
    /// What the connection listens to for it (nothing: it follows no events, only signals).
    pub interest: Option<Interest>,
    pub filter: EventFilter,
    /// Only the account's events that concern this user.
    pub user: Option<Uuid>,
    pub cursor: LogCursor,
}

impl Subscription {
    pub fn matches(&self, e: &RecordedEvent) -> bool {
        self.interest.is_some()
            && Some(e.account_id) == self.filter.account_id
            && self.filter.stream_type.as_deref().is_none_or(|t| t == e.stream_type)
            && self.filter.stream_id.as_deref().is_none_or(|i| i == e.stream_id)
            && self.user.is_none_or(|user| notifications::concerns(e, user))
    }

    /// Why `e` ends this subscription for `me`, if it does: a conversation's member removed
    /// (`removed`: they get nothing after it, not even the event) or archived.
    pub fn ended_by(&self, e: &RecordedEvent, me: Option<Uuid>) -> Option<&'static str> {
        if !matches!(self.channel, Channel::Conversation(_)) {
            return None;
        }
        match e.event_type.as_str() {
            "MemberRemoved" => {
                let removed = e.payload.get("user_id").and_then(|v| v.as_str()).and_then(|s| s.parse().ok());
                (removed.is_some() && removed == me).then_some("removed")
            }
            "ConversationArchived" => Some("archived"),
            _ => None,
        }
    }
}

/// Parley's frame of `e` on the subscription `channel`/`id`; `body` is the part every subscriber
/// gets alike, rendered once per event (see [`frame_body`]).
pub fn event_frame(channel: &str, id: Option<&str>, e: &RecordedEvent, body: &str) -> String {
    let head = json!({"type": "event", "channel": channel, "id": id, "position": e.cursor().to_string()});
    with_members(&head.to_string(), &[body])
}

/// `object` (a JSON object's text) with more members (`"key":value` text, in `parts`) at its end,
/// without serializing either again: how a frame wraps what was rendered once for every
/// subscriber.
pub(super) fn with_members(object: &str, parts: &[&str]) -> String {
    let mut frame = String::with_capacity(object.len() + parts.iter().map(|p| p.len()).sum::<usize>() + 2);
    frame.push_str(&object[..object.len() - 1]);
    frame.push(',');
    parts.iter().for_each(|part| frame.push_str(part));
    frame.push('}');
    frame
}

/// The part of an event's frame that is the same for every subscriber: `"event":{...}` (secrets
/// redacted) and, for a posted message, `"message":{...}`, the message as every answer shows it.
pub fn frame_body(e: &RecordedEvent) -> String {
    let mut data = e.payload.clone();
    redact(&mut data);
    let event = json!({
        "event_id": e.event_id,
        "event_type": e.event_type,
        "stream_type": e.stream_type,
        "stream_id": e.stream_id,
        "version": e.version,
        "data": data,
        "recorded_at": e.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "actor_id": e.actor_id(),
        "correlation_id": e.metadata.get("correlation_id"),
        "causation_id": e.metadata.get("causation_id"),
    });
    let mut body = format!("\"event\":{event}");
    if let Some(message) = posted_message(e) {
        body.push_str(",\"message\":");
        body.push_str(&json!(message).to_string());
    }
    body
}

/// The message a `MessagePosted` event posts, as the read model will show it.
fn posted_message(e: &RecordedEvent) -> Option<MessageView> {
    if e.event_type != "MessagePosted" {
        return None;
    }
    let event: ConversationEvent = parley_aggregates::from_payload(&e.event_type, &e.payload).ok()?;
    MessageView::posted(&event, e.recorded_at, e.version)
}
