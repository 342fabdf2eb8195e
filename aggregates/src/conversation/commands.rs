use uuid::Uuid;

use super::MemberRole;
use crate::values::{MessageBody, Name};

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
    /// Adds a member to a group; only a conversation admin may.
    AddMember { actor_id: Uuid, user_id: Uuid, role: MemberRole },
    /// Posts a message; only a member may. Re-decidable: never fails because others post.
    PostMessage { message_id: Uuid, author_id: Uuid, body: MessageBody },
}
