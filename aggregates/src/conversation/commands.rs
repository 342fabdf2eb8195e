use uuid::Uuid;

use super::MemberRole;
use crate::values::{Emoji, MessageBody, Name};

/// What the write side knows of one message (an index row read under the conversation's lock):
/// the aggregate decides on it without holding every message in its state.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageFact {
    pub message_id: Uuid,
    pub author_id: Uuid,
    pub deleted: bool,
    pub version: i32,
}

/// What the write side knows of one reaction.
#[derive(Debug, Clone, PartialEq)]
pub struct ReactionFact {
    pub reaction_id: Uuid,
    pub message_id: Uuid,
    pub user_id: Uuid,
    pub emoji: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConversationCommand {
    /// Starts a group; the creator becomes its admin and `member_ids` its members.
    StartGroup {
        conversation_id: Uuid,
        account_id: Uuid,
        title: Name,
        creator_id: Uuid,
        member_ids: Vec<Uuid>,
    },
    /// Starts the direct conversation of two users (one per pair: a claim, written beside it).
    StartDirect { conversation_id: Uuid, account_id: Uuid, creator_id: Uuid, other_id: Uuid },
    /// Changes a group's title or topic (`Some(None)` clears the topic); admins only.
    Update { actor_id: Uuid, title: Option<Name>, topic: Option<Option<String>> },
    /// Archives the conversation: a conversation admin, or a holder of `conversations.manage`
    /// (`moderator`).
    Archive { actor_id: Uuid, moderator: bool },
    /// Adds a member to a group; only a conversation admin may.
    AddMember { actor_id: Uuid, user_id: Uuid, role: MemberRole },
    /// Removes a member from a group: an admin removes anyone, a member removes themself.
    RemoveMember { actor_id: Uuid, user_id: Uuid },
    /// Posts a message; only a member may. Re-decidable: never fails because others post.
    /// `mentions` are members named in the body.
    PostMessage { message_id: Uuid, author_id: Uuid, body: MessageBody, mentions: Vec<Uuid> },
    /// Opens a live stream's chat, administered by its host.
    StartStreamChat { conversation_id: Uuid, account_id: Uuid, title: Name, host_id: Uuid },
    /// A message in a stream's chat by one who may see the stream (the caller checked their
    /// grant): no member, so no mentions.
    PostAsReader { message_id: Uuid, author_id: Uuid, body: MessageBody },
    /// A message posted through an incoming webhook bound to this conversation: the hook is the
    /// author (it is no member; binding it to the conversation was the member's decision).
    PostAsWebhook { message_id: Uuid, hook_id: Uuid, body: MessageBody },
    /// Replaces a message's body; its author only. `expected_version` is the client's If-Match.
    EditMessage {
        actor_id: Uuid,
        message: Option<MessageFact>,
        body: MessageBody,
        expected_version: Option<i32>,
    },
    /// Deletes a message (it keeps its place, without a body): its author, a conversation admin
    /// or a holder of `messages.moderate` (`moderator`). Deleting it again changes nothing.
    DeleteMessage { actor_id: Uuid, message: Option<MessageFact>, moderator: bool },
    /// Reacts to a message; `existing` is the actor's reaction with that emoji, if any (then
    /// nothing changes).
    AddReaction {
        reaction_id: Uuid,
        actor_id: Uuid,
        message: Option<MessageFact>,
        emoji: Emoji,
        existing: Option<Uuid>,
    },
    /// Takes a reaction back; its author only.
    RemoveReaction { actor_id: Uuid, reaction: Option<ReactionFact> },
    /// The member has read up to `message`.
    MarkRead { user_id: Uuid, message: Option<MessageFact> },
}
