use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ConversationCommand, ConversationEvent};

pub const GROUP: &str = "group";
pub const DIRECT: &str = "direct";
/// A live stream's chat: its host administers it; whoever may see the stream reads and posts
/// in it without being a member (the caller decides who may, by grant).
pub const STREAM: &str = "stream";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    Admin,
    Member,
}

/// State bounded by the conversation's members, never by its messages.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: Option<Uuid>,
    pub kind: String,
    pub title: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    pub archived: bool,
    /// Members and their roles.
    pub members: BTreeMap<Uuid, MemberRole>,
    /// The last message each member marked read.
    #[serde(default)]
    pub read_up_to: BTreeMap<Uuid, Uuid>,
    pub messages_posted: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversationError {
    #[error("the conversation already exists")]
    AlreadyStarted,
    #[error("the conversation does not exist")]
    NotFound,
    #[error("the conversation is archived")]
    Archived,
    #[error("you are not a member of this conversation")]
    NotAMember,
    #[error("only a conversation admin may do this")]
    NotAnAdmin,
    #[error("the user is already a member")]
    AlreadyAMember,
    #[error("the user is not a member of this conversation")]
    NoSuchMember,
    #[error("only groups have this")]
    NotAGroup,
    #[error("the message does not exist")]
    MessageNotFound,
    #[error("the message is deleted")]
    MessageDeleted,
    #[error("only its author may do this")]
    NotTheAuthor,
    #[error("the message is at version {current}")]
    StaleMessage { current: i32 },
    #[error("the reaction does not exist")]
    ReactionNotFound,
}

impl Conversation {
    /// The conversation exists and is not archived.
    pub(super) fn open(&self) -> Result<Uuid, ConversationError> {
        let id = self.id.ok_or(ConversationError::NotFound)?;
        if self.archived {
            return Err(ConversationError::Archived);
        }
        Ok(id)
    }

    pub fn is_member(&self, user_id: Uuid) -> bool {
        self.members.contains_key(&user_id)
    }

    pub fn is_admin(&self, user_id: Uuid) -> bool {
        self.members.get(&user_id) == Some(&MemberRole::Admin)
    }

    pub fn is_group(&self) -> bool {
        self.kind == GROUP
    }

    pub fn is_stream_chat(&self) -> bool {
        self.kind == STREAM
    }
}

impl Aggregate for Conversation {
    const TYPE: &'static str = "Conversation";
    type Command = ConversationCommand;
    type Event = ConversationEvent;
    type Error = ConversationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ConversationCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), ConversationError> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: ConversationEvent) {
        match event {
            ConversationEvent::ConversationStarted { conversation_id, kind, title, topic, .. } => {
                self.id = Some(conversation_id);
                self.kind = kind;
                self.title = title;
                self.topic = topic;
            }
            ConversationEvent::ConversationUpdated { title, topic, .. } => {
                self.title = title;
                self.topic = topic;
            }
            ConversationEvent::ConversationArchived { .. } => self.archived = true,
            ConversationEvent::MemberAdded { user_id, role, .. } => {
                self.members.insert(user_id, role);
            }
            ConversationEvent::MemberRemoved { user_id, .. } => {
                self.members.remove(&user_id);
                self.read_up_to.remove(&user_id);
            }
            ConversationEvent::MessagePosted { .. } => self.messages_posted += 1,
            ConversationEvent::MessagesRead { user_id, message_id, .. } => {
                self.read_up_to.insert(user_id, message_id);
            }
            ConversationEvent::MessageEdited { .. }
            | ConversationEvent::MessageDeleted { .. }
            | ConversationEvent::ReactionAdded { .. }
            | ConversationEvent::ReactionRemoved { .. } => {}
        }
    }
}
