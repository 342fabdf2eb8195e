use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InvitationEvent {
    #[serde(rename = "InvitationCreated")]
    InvitationCreated {
        invitation_id: Uuid,
        account_id: Uuid,
        email: String,
        role: String,
        /// Secret: redacted wherever events are shown.
        token_hash: String,
        invited_by: Uuid,
        expires_at: DateTime<Utc>,
    },
    #[serde(rename = "InvitationAccepted")]
    InvitationAccepted { invitation_id: Uuid, user_id: Uuid },
    #[serde(rename = "InvitationRevoked")]
    InvitationRevoked { invitation_id: Uuid, revoked_by: Uuid },
}

impl crate::catalog::EventTypes for InvitationEvent {
    const TYPES: &'static [&'static str] = &["InvitationCreated", "InvitationAccepted", "InvitationRevoked"];
}

impl DomainEvent for InvitationEvent {
    fn event_type(&self) -> String {
        match self {
            InvitationEvent::InvitationCreated { .. } => "InvitationCreated".into(),
            InvitationEvent::InvitationAccepted { .. } => "InvitationAccepted".into(),
            InvitationEvent::InvitationRevoked { .. } => "InvitationRevoked".into(),
        }
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}
