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
    #[serde(rename = "ConversationUpdated")]
    ConversationUpdated {
        conversation_id: Uuid,
        title: Option<String>,
        topic: Option<String>,
        updated_by: Uuid,
    },
    #[serde(rename = "ConversationArchived")]
    ConversationArchived { conversation_id: Uuid, archived_by: Uuid },
    #[serde(rename = "MemberAdded")]
    MemberAdded { conversation_id: Uuid, user_id: Uuid, role: MemberRole, added_by: Uuid },
    #[serde(rename = "MemberRemoved")]
    MemberRemoved { conversation_id: Uuid, user_id: Uuid, removed_by: Uuid },
    #[serde(rename = "MessagePosted")]
    MessagePosted {
        message_id: Uuid,
        conversation_id: Uuid,
        author_id: Uuid,
        body: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mentions: Vec<Uuid>,
    },
    /// `version` is the message's version after the change.
    #[serde(rename = "MessageEdited")]
    MessageEdited { message_id: Uuid, conversation_id: Uuid, author_id: Uuid, body: String, version: i32 },
    #[serde(rename = "MessageDeleted")]
    MessageDeleted {
        message_id: Uuid,
        conversation_id: Uuid,
        author_id: Uuid,
        deleted_by: Uuid,
        version: i32,
    },
    #[serde(rename = "ReactionAdded")]
    ReactionAdded { reaction_id: Uuid, message_id: Uuid, conversation_id: Uuid, user_id: Uuid, emoji: String },
    #[serde(rename = "ReactionRemoved")]
    ReactionRemoved {
        reaction_id: Uuid,
        message_id: Uuid,
        conversation_id: Uuid,
        user_id: Uuid,
        emoji: String,
    },
    #[serde(rename = "MessagesRead")]
    MessagesRead { conversation_id: Uuid, user_id: Uuid, message_id: Uuid },
}

impl crate::catalog::EventTypes for ConversationEvent {
    const TYPES: &'static [&'static str] = &[
        "ConversationStarted",
        "ConversationUpdated",
        "ConversationArchived",
        "MemberAdded",
        "MemberRemoved",
        "MessagePosted",
        "MessageEdited",
        "MessageDeleted",
        "ReactionAdded",
        "ReactionRemoved",
        "MessagesRead",
    ];
}

impl DomainEvent for ConversationEvent {
    fn event_type(&self) -> String {
        match self {
            ConversationEvent::ConversationStarted { .. } => "ConversationStarted",
            ConversationEvent::ConversationUpdated { .. } => "ConversationUpdated",
            ConversationEvent::ConversationArchived { .. } => "ConversationArchived",
            ConversationEvent::MemberAdded { .. } => "MemberAdded",
            ConversationEvent::MemberRemoved { .. } => "MemberRemoved",
            ConversationEvent::MessagePosted { .. } => "MessagePosted",
            ConversationEvent::MessageEdited { .. } => "MessageEdited",
            ConversationEvent::MessageDeleted { .. } => "MessageDeleted",
            ConversationEvent::ReactionAdded { .. } => "ReactionAdded",
            ConversationEvent::ReactionRemoved { .. } => "ReactionRemoved",
            ConversationEvent::MessagesRead { .. } => "MessagesRead",
        }
        .into()
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}
