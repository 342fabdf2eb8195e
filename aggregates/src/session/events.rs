use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SessionEvent {
    #[serde(rename = "SessionStarted")]
    SessionStarted {
        session_id: Uuid,
        user_id: Uuid,
        account_id: Uuid,
        /// Secret: redacted wherever events are shown.
        refresh_token_hash: String,
        expires_at: DateTime<Utc>,
    },
    #[serde(rename = "RefreshTokenRotated")]
    RefreshTokenRotated {
        session_id: Uuid,
        user_id: Uuid,
        /// Secret: redacted wherever events are shown.
        refresh_token_hash: String,
        expires_at: DateTime<Utc>,
    },
    #[serde(rename = "SessionEnded")]
    SessionEnded { session_id: Uuid, user_id: Uuid, reason: String },
}

impl crate::catalog::EventTypes for SessionEvent {
    const TYPES: &'static [&'static str] = &["SessionStarted", "RefreshTokenRotated", "SessionEnded"];
}

impl DomainEvent for SessionEvent {
    fn event_type(&self) -> String {
        match self {
            SessionEvent::SessionStarted { .. } => "SessionStarted".into(),
            SessionEvent::RefreshTokenRotated { .. } => "RefreshTokenRotated".into(),
            SessionEvent::SessionEnded { .. } => "SessionEnded".into(),
        }
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}
