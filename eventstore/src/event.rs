//! The shapes of events going into and coming out of the log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cursor::LogCursor;

/// A stream: an aggregate's type and id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StreamKey {
    pub stream_type: String,
    pub stream_id: String,
}

impl StreamKey {
    pub fn new(stream_type: impl Into<String>, stream_id: impl Into<String>) -> Self {
        Self { stream_type: stream_type.into(), stream_id: stream_id.into() }
    }
}

impl std::fmt::Display for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.stream_type, self.stream_id)
    }
}

/// An event about to be appended.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: serde_json::Value,
}

impl NewEvent {
    pub fn new(event_type: impl Into<String>, schema_version: i32, payload: serde_json::Value) -> Self {
        Self { event_id: Uuid::now_v7(), event_type: event_type.into(), schema_version, payload }
    }
}

/// Who caused an event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    User,
    ApiKey,
    /// An incoming webhook: the hook's id is the actor's.
    Webhook,
    #[default]
    System,
}

/// Why, by whom, on whose behalf and from where an event was recorded.
///
/// Stored flat in `events.metadata` so the audit API can filter on `actor_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub actor_type: ActorKind,
    /// The user or API key that acted; absent for the system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<Uuid>,
    /// The request (or job) that caused the command; shared by everything it triggered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The event that triggered a process manager to issue this command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
}

impl Metadata {
    pub fn system() -> Self {
        Self::default()
    }

    pub fn to_json(&self) -> serde_json::Value {
        // A struct of strings and uuids always serializes.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// An event as stored in the log, its payload upcast to the newest schema version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub position: i64,
    pub transaction_id: u64,
    pub event_id: Uuid,
    pub account_id: Uuid,
    pub stream_type: String,
    pub stream_id: String,
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    pub fn cursor(&self) -> LogCursor {
        LogCursor::new(self.transaction_id, self.position)
    }

    /// The acting user or API key, from the metadata.
    pub fn actor_id(&self) -> Option<Uuid> {
        self.metadata.get("actor_id").and_then(|v| v.as_str()).and_then(|s| s.parse().ok())
    }
}
