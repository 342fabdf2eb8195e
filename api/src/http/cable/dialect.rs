//! The two dialects the cable speaks over one subscription machinery: Parley's own frames, and
//! Action Cable's protocol (`actioncable-v1-json`) with the chat seed's channel names. A dialect
//! decodes what a client says into a [`Request`] and encodes what the connection has to say; the
//! connection ([`super::Connection`]) decides everything else once for both.

use serde::Deserialize;
use serde_json::{json, Value};

use super::subscription::with_members;

/// The subprotocol `@rails/actioncable` offers first.
pub const ACTION_CABLE: &str = "actioncable-v1-json";
/// Parley's own dialect, for a client that names it (offering nothing gets it too).
pub const PARLEY: &str = "parley-v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Parley,
    ActionCable,
}

/// A subscription as its dialect names it; the key of a connection's subscriptions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Label {
    Parley {
        channel: String,
        id: Option<String>,
    },
    /// The client's identifier, byte for byte (the client compares strings).
    Cable(String),
}

/// What a subscription follows, whichever dialect named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Channel {
    /// A conversation's events (the raw id; a bad one is not found).
    Conversation(String),
    /// Parley's `user` channel: the account's events that concern the user, and presence.
    User,
    /// Every event of the account (`audit.view`).
    Account,
    /// Action Cable's `PresenceChannel`: who of those sharing a conversation is online.
    Presence,
    /// Action Cable's `CallChannel`: the user's calls, their signals and media changes.
    Calls,
    /// Action Cable's `UserChannel`: the user's notifications.
    Notifications,
    /// A live stream's viewers (the raw id): its viewer count, and its own events.
    Stream(String),
}

/// How a callee or participant answers a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallAnswer {
    Accept,
    Decline,
    HangUp,
}

/// What a client asked for.
#[derive(Debug)]
pub enum Request {
    Subscribe {
        label: Label,
        channel: Result<Channel, &'static str>,
        after: Option<String>,
    },
    Unsubscribe {
        label: Label,
    },
    Ping,
    /// A heartbeat (any frame counts as one).
    Heartbeat,
    Typing {
        conversation_id: String,
    },
    Signal {
        call_id: String,
        to_user_id: String,
        signal: Value,
    },
    CallMedia {
        call_id: String,
        muted: Option<bool>,
        camera_off: Option<bool>,
    },
    Call {
        call_id: String,
        answer: CallAnswer,
    },
}

/// A request, and the subscription it was sent on (Action Cable's actions are), whose refusals
/// are answered there.
#[derive(Debug)]
pub struct Decoded {
    pub request: Request,
    pub on: Option<Label>,
}

/// A frame that could not be understood: the error's code and message, and the subscription it
/// named if it named one.
#[derive(Debug)]
pub struct Undecodable {
    pub code: &'static str,
    pub message: String,
    pub on: Option<Label>,
}

impl Undecodable {
    fn bad(message: impl Into<String>, on: Option<Label>) -> Self {
        Self { code: "bad_request", message: message.into(), on }
    }
}

/// Parley's commands.
#[derive(Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
enum ParleyCommand {
    Subscribe { channel: String, id: Option<String>, after: Option<String> },
    Unsubscribe { channel: String, id: Option<String> },
    Ping,
    Presence,
    Typing { conversation_id: String },
    Signal { call_id: String, to_user_id: String, signal: Value },
    CallMedia { call_id: String, muted: Option<bool>, camera_off: Option<bool> },
}

/// Action Cable's commands.
#[derive(Deserialize)]
struct CableCommand {
    command: String,
    identifier: String,
    data: Option<String>,
}

/// An Action Cable identifier: the channel and its parameters.
#[derive(Deserialize)]
struct Identifier {
    channel: String,
    conversation_id: Option<String>,
    stream_id: Option<String>,
    after: Option<String>,
}

/// An action's `call_session_id`.
#[derive(Deserialize)]
struct OnCall {
    call_session_id: String,
}

impl Dialect {
    /// The dialect of the subprotocol the handshake selected.
    pub fn of_protocol(protocol: Option<&str>) -> Self {
        match protocol {
            Some(ACTION_CABLE) => Dialect::ActionCable,
            _ => Dialect::Parley,
        }
    }

    pub fn decode(self, text: &str) -> Result<Decoded, Undecodable> {
        match self {
            Dialect::Parley => decode_parley(text),
            Dialect::ActionCable => decode_cable(text),
        }
    }

    pub fn welcome(self) -> String {
        json!({"type": "welcome"}).to_string()
    }

    /// What the dialect sends on its own timer to show the connection lives (Action Cable's
    /// client reconnects after 6 s without one), and how often.
    pub fn keepalive(self) -> Option<std::time::Duration> {
        match self {
            Dialect::Parley => None,
            Dialect::ActionCable => Some(std::time::Duration::from_secs(3)),
        }
    }

    pub fn ping(self) -> String {
        json!({"type": "ping", "message": chrono::Utc::now().timestamp()}).to_string()
    }

    pub fn subscribed(self, label: &Label, position: &str) -> String {
        match label {
            Label::Parley { channel, id } => {
                json!({"type": "subscribed", "channel": channel, "id": id, "position": position}).to_string()
            }
            Label::Cable(identifier) => {
                json!({"identifier": identifier, "type": "confirm_subscription"}).to_string()
            }
        }
    }

    pub fn rejected(self, label: &Label, code: &str) -> String {
        match label {
            Label::Parley { channel, id } => {
                json!({"type": "rejected", "channel": channel, "id": id, "code": code}).to_string()
            }
            Label::Cable(identifier) => {
                json!({"identifier": identifier, "type": "reject_subscription"}).to_string()
            }
        }
    }

    /// The server ended the subscription (`removed`, `archived`); Action Cable's client
    /// understands a rejection.
    pub fn ended(self, label: &Label, reason: &str) -> String {
        match label {
            Label::Parley { channel, id } => {
                json!({"type": "unsubscribed", "channel": channel, "id": id, "reason": reason}).to_string()
            }
            Label::Cable(_) => self.rejected(label, reason),
        }
    }

    /// The client's own unsubscribe, done (Action Cable answers nothing).
    pub fn unsubscribed(self, label: &Label) -> Option<String> {
        match label {
            Label::Parley { channel, id } => {
                Some(json!({"type": "unsubscribed", "channel": channel, "id": id}).to_string())
            }
            Label::Cable(_) => None,
        }
    }

    pub fn pong(self) -> Option<String> {
        match self {
            Dialect::Parley => Some(json!({"type": "pong"}).to_string()),
            Dialect::ActionCable => None,
        }
    }

    /// A refusal, on the subscription the request came on when there is one.
    pub fn error(self, on: Option<&Label>, code: &str, message: &str) -> String {
        let error = json!({"type": "error", "code": code, "message": message});
        match on {
            Some(Label::Cable(identifier)) => json!({"identifier": identifier, "message": error}).to_string(),
            _ => error.to_string(),
        }
    }

    /// `message` sent on the Action Cable subscription `identifier`: `{"identifier":...,"message":...}`.
    pub fn on_subscription(identifier: &str, message: &str) -> String {
        with_members(&json!({"identifier": identifier}).to_string(), &["\"message\":", message])
    }

    /// Sent before the connection closes because its credential ended (or was never good).
    pub fn unauthorized(self) -> Option<String> {
        match self {
            Dialect::Parley => None,
            Dialect::ActionCable => {
                Some(json!({"type": "disconnect", "reason": "unauthorized", "reconnect": false}).to_string())
            }
        }
    }

    /// Sent before the connection closes because the node stops: come back (elsewhere).
    pub fn restarting(self) -> Option<String> {
        match self {
            Dialect::Parley => None,
            Dialect::ActionCable => {
                Some(json!({"type": "disconnect", "reason": "server_restart", "reconnect": true}).to_string())
            }
        }
    }
}

fn decode_parley(text: &str) -> Result<Decoded, Undecodable> {
    let command: ParleyCommand =
        serde_json::from_str(text).map_err(|e| Undecodable::bad(e.to_string(), None))?;
    let request = match command {
        ParleyCommand::Subscribe { channel, id, after } => {
            let parsed = match channel.as_str() {
                "user" => Ok(Channel::User),
                "account" => Ok(Channel::Account),
                "conversation" => Ok(Channel::Conversation(id.clone().unwrap_or_default())),
                "stream" => Ok(Channel::Stream(id.clone().unwrap_or_default())),
                _ => Err("not_found"),
            };
            Request::Subscribe { label: Label::Parley { channel, id }, channel: parsed, after }
        }
        ParleyCommand::Unsubscribe { channel, id } => {
            Request::Unsubscribe { label: Label::Parley { channel, id } }
        }
        ParleyCommand::Ping => Request::Ping,
        ParleyCommand::Presence => Request::Heartbeat,
        ParleyCommand::Typing { conversation_id } => Request::Typing { conversation_id },
        ParleyCommand::Signal { call_id, to_user_id, signal } => {
            Request::Signal { call_id, to_user_id, signal }
        }
        ParleyCommand::CallMedia { call_id, muted, camera_off } => {
            Request::CallMedia { call_id, muted, camera_off }
        }
    };
    Ok(Decoded { request, on: None })
}

fn decode_cable(text: &str) -> Result<Decoded, Undecodable> {
    let command: CableCommand =
        serde_json::from_str(text).map_err(|e| Undecodable::bad(e.to_string(), None))?;
    let label = Label::Cable(command.identifier.clone());
    let identifier: Identifier = serde_json::from_str(&command.identifier).map_err(|e| {
        Undecodable::bad(format!("the identifier is not a channel's JSON: {e}"), Some(label.clone()))
    })?;
    match command.command.as_str() {
        "subscribe" => {
            let channel = match identifier.channel.as_str() {
                "ConversationChannel" => {
                    Ok(Channel::Conversation(identifier.conversation_id.unwrap_or_default()))
                }
                "PresenceChannel" => Ok(Channel::Presence),
                "CallChannel" => Ok(Channel::Calls),
                "UserChannel" => Ok(Channel::Notifications),
                "StreamChannel" => Ok(Channel::Stream(identifier.stream_id.unwrap_or_default())),
                _ => Err("not_found"),
            };
            let request = Request::Subscribe { label, channel, after: identifier.after };
            Ok(Decoded { request, on: None })
        }
        "unsubscribe" => Ok(Decoded { request: Request::Unsubscribe { label }, on: None }),
        "message" => {
            let data = command.data.as_deref().unwrap_or("{}");
            let data: Value = serde_json::from_str(data)
                .map_err(|e| Undecodable::bad(format!("data is not JSON: {e}"), Some(label.clone())))?;
            let request = action(&identifier, &data).map_err(|m| Undecodable::bad(m, Some(label.clone())))?;
            Ok(Decoded { request, on: Some(label) })
        }
        other => Err(Undecodable::bad(format!("unknown command {other:?}"), Some(label))),
    }
}

/// The request an action of a channel makes.
fn action(identifier: &Identifier, data: &Value) -> Result<Request, String> {
    let name = data.get("action").and_then(Value::as_str).unwrap_or_default();
    let field = |key: &str| data.get(key).and_then(Value::as_str).map(str::to_owned);
    let call_id = || {
        OnCall::deserialize(data)
            .map(|c| c.call_session_id)
            .map_err(|_| format!("{name} needs call_session_id"))
    };
    let request = match (identifier.channel.as_str(), name) {
        ("ConversationChannel", "typing") => {
            Request::Typing { conversation_id: identifier.conversation_id.clone().unwrap_or_default() }
        }
        ("PresenceChannel", "ping") => Request::Heartbeat,
        ("CallChannel", "accept_call") => Request::Call { call_id: call_id()?, answer: CallAnswer::Accept },
        ("CallChannel", "decline_call") => Request::Call { call_id: call_id()?, answer: CallAnswer::Decline },
        ("CallChannel", "end_call") => Request::Call { call_id: call_id()?, answer: CallAnswer::HangUp },
        ("CallChannel", "send_signal") => Request::Signal {
            call_id: call_id()?,
            to_user_id: field("target_user_id").ok_or("send_signal needs target_user_id")?,
            signal: data.get("signal").cloned().unwrap_or(Value::Null),
        },
        ("CallChannel", "toggle_mute") => Request::CallMedia {
            call_id: call_id()?,
            muted: Some(data.get("muted").and_then(Value::as_bool).ok_or("toggle_mute needs muted")?),
            camera_off: None,
        },
        ("CallChannel", "toggle_camera") => Request::CallMedia {
            call_id: call_id()?,
            muted: None,
            camera_off: Some(
                data.get("camera_off").and_then(Value::as_bool).ok_or("toggle_camera needs camera_off")?,
            ),
        },
        (channel, action) => return Err(format!("{channel} has no action {action:?}")),
    };
    Ok(request)
}

#[cfg(test)]
#[path = "dialect_tests.rs"]
mod tests;
