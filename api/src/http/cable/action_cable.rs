//! What Action Cable's channels send, as the chat seed's front end reads it: events rendered as
//! `new_message`, `incoming_call` and the rest, signals as `signal` and `participant_muted`,
//! presence as status frames. Each carries the `position` of the event it comes from.

use parley_aggregates::call::CallEvent;
use parley_aggregates::conversation::ConversationEvent;
use parley_eventstore::RecordedEvent;
use parley_projections::read_models::messages::query::{self as messages, MessageView};
use parley_projections::read_models::notifications::{self, query as notification_query};
use parley_projections::read_models::users::query as users;
use parley_projections::Reads;
use serde_json::{json, Value};
use uuid::Uuid;

use super::dialect::Channel;
use crate::app::App;

/// The message a conversation's or a call's event makes on its Action Cable channel: the same
/// for every subscriber (rendered once per event on a node). `None` for an event the channel does
/// not show (its position still moves on).
pub async fn shared_message(app: &App, e: &RecordedEvent) -> Option<String> {
    let position = e.cursor().to_string();
    let mut message = match e.stream_type.as_str() {
        "Conversation" => conversation_message(app, e).await?,
        "Call" => call_message(app, e).await?,
        _ => return None,
    };
    message["position"] = json!(position);
    Some(message.to_string())
}

async fn conversation_message(app: &App, e: &RecordedEvent) -> Option<Value> {
    let event: ConversationEvent = parley_aggregates::from_payload(&e.event_type, &e.payload).ok()?;
    Some(match event {
        ConversationEvent::MessagePosted { .. } => {
            json!({"type": "new_message", "message": MessageView::posted(&event, e.recorded_at, e.version)?})
        }
        ConversationEvent::MessageEdited { message_id, conversation_id, .. } => {
            // The message as every answer shows it, once the read model has the edit.
            let reads = Reads::new(app.store.pool(), Some(e.cursor()));
            let message = messages::one(&reads, conversation_id, message_id)
                .await
                .map_err(
                    |err| tracing::warn!(error = %err, %message_id, "an edited message could not be read"),
                )
                .ok()??;
            json!({"type": "message_edited", "message": message})
        }
        ConversationEvent::MessageDeleted { message_id, .. } => {
            json!({"type": "message_deleted", "message_id": message_id})
        }
        ConversationEvent::ReactionAdded { reaction_id, message_id, user_id, emoji, .. } => json!({
            "type": "reaction_added",
            "reaction": {
                "id": reaction_id, "message_id": message_id, "user_id": user_id, "emoji": emoji,
                "created_at": e.recorded_at,
            },
        }),
        ConversationEvent::ReactionRemoved { reaction_id, message_id, .. } => {
            json!({"type": "reaction_removed", "reaction_id": reaction_id, "message_id": message_id})
        }
        _ => return None,
    })
}

/// `{id, name, display_name, avatar_url}` of a user, for `caller` and `accepted_by`.
async fn person(app: &App, account_id: Uuid, user_id: Uuid) -> Value {
    let reads = Reads::new(app.store.pool(), None);
    match users::public_profile(&reads, account_id, user_id).await {
        Ok(Some(p)) => {
            json!({"id": p.id, "name": p.name, "display_name": p.display_name, "avatar_url": p.avatar_url})
        }
        _ => json!({"id": user_id, "name": null, "display_name": null, "avatar_url": null}),
    }
}

async fn call_message(app: &App, e: &RecordedEvent) -> Option<Value> {
    let event: CallEvent = parley_aggregates::from_payload(&e.event_type, &e.payload).ok()?;
    Some(match event {
        CallEvent::CallRinging { call_id, conversation_id, kind, initiator_id, .. } => json!({
            "type": "incoming_call",
            "call_session_id": call_id,
            "caller": person(app, e.account_id, initiator_id).await,
            "call_type": kind,
            "conversation_id": conversation_id,
        }),
        CallEvent::CallAccepted { call_id, user_id, .. } => json!({
            "type": "call_accepted",
            "call_session_id": call_id,
            "accepted_by": person(app, e.account_id, user_id).await,
        }),
        CallEvent::CallDeclined { call_id, user_id, .. } => {
            json!({"type": "call_declined", "call_session_id": call_id, "declined_by": user_id})
        }
        CallEvent::CallParticipantLeft { call_id, user_id, .. } => {
            json!({"type": "participant_left", "call_session_id": call_id, "user_id": user_id})
        }
        CallEvent::CallEnded { call_id, state, duration_s, .. } => {
            json!({"type": "call_ended", "call_session_id": call_id, "state": state, "duration_s": duration_s})
        }
        CallEvent::CallMissed { call_id, .. } => {
            json!({"type": "call_ended", "call_session_id": call_id, "state": "missed", "duration_s": 0})
        }
        CallEvent::CallStarted { .. } => return None,
    })
}

/// The notification `e` gave `user`, for their `UserChannel`, once the read model has it.
pub async fn notification_message(app: &App, e: &RecordedEvent, user: Uuid) -> Option<String> {
    if !notifications::may_notify(&e.event_type) {
        return None;
    }
    let reads = Reads::new(app.store.pool(), Some(e.cursor()));
    let notification = notification_query::of_event(&reads, user, e.event_id)
        .await
        .map_err(|err| tracing::warn!(error = %err, "a notification could not be read"))
        .ok()??;
    Some(
        json!({"type": "notification", "notification": notification, "position": e.cursor().to_string()})
            .to_string(),
    )
}

/// What a signal (Parley's frame, as every node relays it) is on the Action Cable channels that
/// show it: a media change is one message per change (`participant_muted`,
/// `participant_camera_toggled`), as the seed's front end reads them.
pub fn signal_messages(frame: &Value) -> Vec<(Channel, Value)> {
    let kind = frame.get("type").and_then(Value::as_str).unwrap_or_default();
    let field = |k: &str| frame.get(k).cloned().unwrap_or(Value::Null);
    match kind {
        "signal" => vec![(
            Channel::Calls,
            json!({
                "type": "signal", "from_user_id": field("from_user_id"),
                "call_session_id": field("call_id"), "signal": field("signal"),
            }),
        )],
        "call_media" => {
            let mut changes = Vec::new();
            if !field("muted").is_null() {
                changes.push((
                    Channel::Calls,
                    json!({
                        "type": "participant_muted", "call_session_id": field("call_id"),
                        "user_id": field("user_id"), "muted": field("muted"),
                    }),
                ));
            }
            if !field("camera_off").is_null() {
                changes.push((
                    Channel::Calls,
                    json!({
                        "type": "participant_camera_toggled", "call_session_id": field("call_id"),
                        "user_id": field("user_id"), "camera_off": field("camera_off"),
                    }),
                ));
            }
            changes
        }
        "typing" => match frame.get("conversation_id").and_then(Value::as_str) {
            Some(conversation) => vec![(
                Channel::Conversation(conversation.to_owned()),
                json!({"type": "typing", "conversation_id": conversation, "user_id": field("user_id")}),
            )],
            None => Vec::new(),
        },
        "presence" => vec![(
            Channel::Presence,
            json!({
                "user_id": field("user_id"), "username": field("name"), "status": field("status"),
                "last_seen_at": field("last_seen_at"),
            }),
        )],
        _ => Vec::new(),
    }
}
