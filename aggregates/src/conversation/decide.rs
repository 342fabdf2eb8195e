//! The conversation's rules: each command decided on the state (members, roles, read markers)
//! and, for one message or reaction, on its write-side facts.

use uuid::Uuid;

use super::aggregate::{DIRECT, GROUP, STREAM};
use super::commands::MessageFact;
use super::{Conversation, ConversationCommand, ConversationError, ConversationEvent, MemberRole};

type Decided = Result<Vec<ConversationEvent>, ConversationError>;

impl Conversation {
    pub(super) fn decide(&self, command: ConversationCommand) -> Decided {
        use ConversationCommand as C;
        match command {
            C::StartGroup { conversation_id, title, creator_id, member_ids, .. } => {
                self.start(conversation_id, GROUP, Some(title.as_str().to_owned()), creator_id, &member_ids)
            }
            C::StartStreamChat { conversation_id, title, host_id, .. } => {
                self.start(conversation_id, STREAM, Some(title.as_str().to_owned()), host_id, &[])
            }
            C::PostAsReader { message_id, author_id, body } => {
                let conversation_id = self.open()?;
                if !self.is_stream_chat() {
                    return Err(ConversationError::NotAMember);
                }
                Ok(vec![ConversationEvent::MessagePosted {
                    message_id,
                    conversation_id,
                    author_id,
                    body: body.as_str().to_owned(),
                    mentions: Vec::new(),
                }])
            }
            C::StartDirect { conversation_id, creator_id, other_id, .. } => {
                self.start(conversation_id, DIRECT, None, creator_id, &[other_id])
            }
            C::Update { actor_id, title, topic } => {
                let conversation_id = self.administered_by(actor_id)?;
                let title = title.map_or_else(|| self.title.clone(), |t| Some(t.as_str().to_owned()));
                let topic = topic.unwrap_or_else(|| self.topic.clone());
                if title == self.title && topic == self.topic {
                    return Ok(vec![]);
                }
                Ok(vec![ConversationEvent::ConversationUpdated {
                    conversation_id,
                    title,
                    topic,
                    updated_by: actor_id,
                }])
            }
            C::Archive { actor_id, moderator } => {
                // An archived conversation is gone: archiving it again finds nothing.
                let conversation_id = self.open().map_err(|_| ConversationError::NotFound)?;
                if !moderator {
                    self.member(actor_id)?;
                    if !self.is_admin(actor_id) && self.is_group() {
                        return Err(ConversationError::NotAnAdmin);
                    }
                }
                Ok(vec![ConversationEvent::ConversationArchived { conversation_id, archived_by: actor_id }])
            }
            C::AddMember { actor_id, user_id, role } => {
                let conversation_id = self.administered_by(actor_id)?;
                if self.is_member(user_id) {
                    return Err(ConversationError::AlreadyAMember);
                }
                Ok(vec![ConversationEvent::MemberAdded {
                    conversation_id,
                    user_id,
                    role,
                    added_by: actor_id,
                }])
            }
            C::RemoveMember { actor_id, user_id } => {
                let conversation_id = self.open()?;
                self.member(actor_id)?;
                if !self.is_group() {
                    return Err(ConversationError::NotAGroup);
                }
                if actor_id != user_id && !self.is_admin(actor_id) {
                    return Err(ConversationError::NotAnAdmin);
                }
                if !self.is_member(user_id) {
                    return Err(ConversationError::NoSuchMember);
                }
                Ok(vec![ConversationEvent::MemberRemoved { conversation_id, user_id, removed_by: actor_id }])
            }
            C::PostMessage { message_id, author_id, body, mentions } => {
                let conversation_id = self.open()?;
                self.member(author_id)?;
                let mentions =
                    mentions.into_iter().filter(|m| self.is_member(*m) && *m != author_id).collect();
                let body = body.as_str().to_owned();
                Ok(vec![ConversationEvent::MessagePosted {
                    message_id,
                    conversation_id,
                    author_id,
                    body,
                    mentions,
                }])
            }
            C::PostAsWebhook { message_id, hook_id, body } => {
                let conversation_id = self.open()?;
                Ok(vec![ConversationEvent::MessagePosted {
                    message_id,
                    conversation_id,
                    author_id: hook_id,
                    body: body.as_str().to_owned(),
                    mentions: Vec::new(),
                }])
            }
            C::EditMessage { actor_id, message, body, expected_version } => {
                let conversation_id = self.open()?;
                self.member(actor_id)?;
                let m = live(message)?;
                if m.author_id != actor_id {
                    return Err(ConversationError::NotTheAuthor);
                }
                if expected_version.is_some_and(|v| v != m.version) {
                    return Err(ConversationError::StaleMessage { current: m.version });
                }
                Ok(vec![ConversationEvent::MessageEdited {
                    message_id: m.message_id,
                    conversation_id,
                    author_id: m.author_id,
                    body: body.as_str().to_owned(),
                    version: m.version + 1,
                }])
            }
            C::DeleteMessage { actor_id, message, moderator } => {
                let conversation_id = self.open()?;
                if !moderator {
                    self.member(actor_id)?;
                }
                let m = message.ok_or(ConversationError::MessageNotFound)?;
                if m.deleted {
                    return Ok(vec![]);
                }
                if !(moderator || m.author_id == actor_id || self.is_admin(actor_id)) {
                    return Err(ConversationError::NotTheAuthor);
                }
                Ok(vec![ConversationEvent::MessageDeleted {
                    message_id: m.message_id,
                    conversation_id,
                    author_id: m.author_id,
                    deleted_by: actor_id,
                    version: m.version + 1,
                }])
            }
            C::AddReaction { reaction_id, actor_id, message, emoji, existing } => {
                let conversation_id = self.open()?;
                self.member(actor_id)?;
                let m = live(message)?;
                if existing.is_some() {
                    return Ok(vec![]);
                }
                Ok(vec![ConversationEvent::ReactionAdded {
                    reaction_id,
                    message_id: m.message_id,
                    conversation_id,
                    user_id: actor_id,
                    emoji: emoji.as_str().to_owned(),
                }])
            }
            C::RemoveReaction { actor_id, reaction } => {
                let conversation_id = self.open()?;
                self.member(actor_id).map_err(|_| ConversationError::ReactionNotFound)?;
                let r = reaction.ok_or(ConversationError::ReactionNotFound)?;
                if r.user_id != actor_id {
                    return Err(ConversationError::NotTheAuthor);
                }
                Ok(vec![ConversationEvent::ReactionRemoved {
                    reaction_id: r.reaction_id,
                    message_id: r.message_id,
                    conversation_id,
                    user_id: r.user_id,
                    emoji: r.emoji,
                }])
            }
            C::MarkRead { user_id, message } => {
                let conversation_id = self.open()?;
                self.member(user_id)?;
                let m = message.ok_or(ConversationError::MessageNotFound)?;
                if self.read_up_to.get(&user_id) == Some(&m.message_id) {
                    return Ok(vec![]);
                }
                Ok(vec![ConversationEvent::MessagesRead {
                    conversation_id,
                    user_id,
                    message_id: m.message_id,
                }])
            }
        }
    }

    fn start(
        &self,
        conversation_id: Uuid,
        kind: &str,
        title: Option<String>,
        creator_id: Uuid,
        others: &[Uuid],
    ) -> Decided {
        if self.id.is_some() {
            return Err(ConversationError::AlreadyStarted);
        }
        let creator_role = if kind == DIRECT { MemberRole::Member } else { MemberRole::Admin };
        let mut events = vec![
            ConversationEvent::ConversationStarted {
                conversation_id,
                kind: kind.into(),
                title,
                topic: None,
                created_by: creator_id,
            },
            ConversationEvent::MemberAdded {
                conversation_id,
                user_id: creator_id,
                role: creator_role,
                added_by: creator_id,
            },
        ];
        let mut added = vec![creator_id];
        for user_id in others {
            if !added.contains(user_id) {
                added.push(*user_id);
                events.push(ConversationEvent::MemberAdded {
                    conversation_id,
                    user_id: *user_id,
                    role: MemberRole::Member,
                    added_by: creator_id,
                });
            }
        }
        Ok(events)
    }

    /// The actor's membership: outsiders see no conversation at all.
    fn member(&self, actor_id: Uuid) -> Result<MemberRole, ConversationError> {
        self.members.get(&actor_id).copied().ok_or(ConversationError::NotAMember)
    }

    /// An open group the actor administers.
    fn administered_by(&self, actor_id: Uuid) -> Result<Uuid, ConversationError> {
        let conversation_id = self.open()?;
        let role = self.member(actor_id).map_err(|_| ConversationError::NotFound)?;
        if !self.is_group() {
            return Err(ConversationError::NotAGroup);
        }
        if role != MemberRole::Admin {
            return Err(ConversationError::NotAnAdmin);
        }
        Ok(conversation_id)
    }
}

/// A message that exists and is not deleted.
fn live(message: Option<MessageFact>) -> Result<MessageFact, ConversationError> {
    match message {
        None => Err(ConversationError::MessageNotFound),
        Some(m) if m.deleted => Err(ConversationError::MessageDeleted),
        Some(m) => Ok(m),
    }
}
