//! Conversations: groups, their members and their messages.

use parley_aggregates::conversation::{Conversation, ConversationCommand, MemberRole};
use parley_aggregates::permissions::Permission;
use parley_aggregates::values::{MessageBody, Name};
use uuid::Uuid;

use super::{field, Commands};
use crate::context::CommandContext;
use crate::error::DispatchError;
use crate::unit_of_work::{with_retry, Executed, UnitOfWork};

impl Commands {
    /// Starts a group with the caller as its admin. Every member must be an active user of the
    /// caller's account.
    #[tracing::instrument(skip_all)]
    pub async fn start_group(
        &self,
        ctx: &CommandContext,
        title: &str,
        member_ids: &[Uuid],
    ) -> Result<Executed<Conversation>, DispatchError> {
        ctx.require(Permission::ConversationsCreate)?;
        let creator_id = ctx.user_id()?;
        let title = field("title", Name::parse(title))?;
        let mut members: Vec<Uuid> = member_ids.iter().copied().filter(|m| *m != creator_id).collect();
        members.sort();
        members.dedup();
        let conversation_id = Uuid::now_v7();
        let key = conversation_id.to_string();
        let start = ConversationCommand::StartGroup {
            conversation_id,
            account_id: ctx.account_id,
            title,
            creator_id,
            member_ids: members.clone(),
        };
        with_retry(|| async {
            let mut uow = self.dispatcher.begin(ctx).await?;
            if !all_active_users(&mut uow, &members).await? {
                return Err(DispatchError::Invalid {
                    field: "member_ids",
                    message: "contains an unknown user".into(),
                });
            }
            let done = uow.execute::<Conversation>(&key, start.clone()).await?;
            uow.commit().await?;
            Ok(done)
        })
        .await
    }

    /// Adds a user of the caller's account to a group; only a conversation admin may.
    #[tracing::instrument(skip_all)]
    pub async fn add_member(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        user_id: Uuid,
        role: MemberRole,
    ) -> Result<Executed<Conversation>, DispatchError> {
        let actor_id = ctx.user_id()?;
        let add = ConversationCommand::AddMember { actor_id, user_id, role };
        let key = conversation_id.to_string();
        with_retry(|| async {
            let mut uow = self.dispatcher.begin(ctx).await?;
            if !all_active_users(&mut uow, &[user_id]).await? {
                return Err(DispatchError::NotFound("user"));
            }
            let done = uow.execute::<Conversation>(&key, add.clone()).await?;
            uow.commit().await?;
            Ok(done)
        })
        .await
    }

    /// Posts a message as the caller. Re-decidable: concurrent posters queue on the
    /// conversation's lock and never fail because of each other.
    #[tracing::instrument(skip_all)]
    pub async fn post_message(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        body: &str,
    ) -> Result<Executed<Conversation>, DispatchError> {
        let author_id = ctx.user_id()?;
        let body = field("body", MessageBody::parse(body))?;
        let post = ConversationCommand::PostMessage { message_id: Uuid::now_v7(), author_id, body };
        self.dispatcher.execute::<Conversation>(ctx, &conversation_id.to_string(), post).await
    }
}

/// Whether every id is an active user of the unit's account (write-side index rows).
async fn all_active_users(uow: &mut UnitOfWork, ids: &[Uuid]) -> Result<bool, DispatchError> {
    if ids.is_empty() {
        return Ok(true);
    }
    let account_id = uow.context().account_id;
    let (found,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM user_facts WHERE account_id = $1 AND active AND user_id = ANY($2)",
    )
    .bind(account_id)
    .bind(ids)
    .fetch_one(uow.conn())
    .await?;
    Ok(found == ids.len() as i64)
}
