use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::MemberRole;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConversationEvent {
    #[serde(rename = "ConversationStarted")]
    ConversationStarted {
        conversation_id: Uuid,
        kind: String,
        title: Option<String>,
        #[serde(default)]
        topic: Option<String>,
        created_by: Uuid,
    },
    #[serde(rename = "MemberAdded")]
    MemberAdded { conversation_id: Uuid, user_id: Uuid, role: MemberRole, added_by: Uuid },
    #[serde(rename = "MessagePosted")]
    MessagePosted { message_id: Uuid, conversation_id: Uuid, author_id: Uuid, body: String },
}

impl DomainEvent for ConversationEvent {
    fn event_type(&self) -> String {
        match self {
            ConversationEvent::ConversationStarted { .. } => "ConversationStarted".into(),
            ConversationEvent::MemberAdded { .. } => "MemberAdded".into(),
            ConversationEvent::MessagePosted { .. } => "MessagePosted".into(),
        }
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}
