//! Conversations: groups, their members and their messages.

use parley_aggregates::conversation::{Conversation, ConversationCommand, MemberRole};
use parley_aggregates::permissions::Permission;
use parley_aggregates::values::{MessageBody, Name};
use uuid::Uuid;

use super::{field, Commands};
use crate::context::CommandContext;
use crate::dispatcher::{Idempotency, Idempotent};
use crate::error::DispatchError;
use crate::unit_of_work::{Executed, UnitOfWork};

/// The idempotency key of a conversation command, with its renderings.
pub type ConversationIdempotency<'a> = Idempotency<'a, Executed<Conversation>>;

impl Commands {
    /// Starts a group with the caller as its admin. Every member must be an active user of the
    /// caller's account.
    pub async fn start_group(
        &self,
        ctx: &CommandContext,
        title: &str,
        member_ids: &[Uuid],
    ) -> Result<Executed<Conversation>, DispatchError> {
        self.start_group_with(ctx, title, member_ids, None).await?.fresh()
    }

    #[tracing::instrument(skip_all)]
    pub async fn start_group_with(
        &self,
        ctx: &CommandContext,
        title: &str,
        member_ids: &[Uuid],
        idempotency: Option<&ConversationIdempotency<'_>>,
    ) -> Result<Idempotent<Executed<Conversation>>, DispatchError> {
        ctx.require(Permission::ConversationsCreate)?;
        let creator_id = ctx.user_id()?;
        let title = field("title", Name::parse(title))?;
        let mut members: Vec<Uuid> = member_ids.iter().copied().filter(|m| *m != creator_id).collect();
        members.sort();
        members.dedup();
        let conversation_id = Uuid::now_v7();
        let start = ConversationCommand::StartGroup {
            conversation_id,
            account_id: ctx.account_id,
            title,
            creator_id,
            member_ids: members.clone(),
        };
        self.dispatcher
            .transact(ctx, idempotency, |uow| {
                let (start, members) = (start.clone(), members.clone());
                Box::pin(async move {
                    if !all_active_users(uow, &members).await? {
                        return Err(DispatchError::Invalid {
                            field: "member_ids",
                            message: "contains an unknown user".into(),
                        });
                    }
                    uow.execute::<Conversation>(&conversation_id.to_string(), start).await
                })
            })
            .await
    }

    /// Adds a user of the caller's account to a group; only a conversation admin may.
    pub async fn add_member(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        user_id: Uuid,
        role: MemberRole,
    ) -> Result<Executed<Conversation>, DispatchError> {
        self.add_member_with(ctx, conversation_id, user_id, role, None).await?.fresh()
    }

    #[tracing::instrument(skip_all)]
    pub async fn add_member_with(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        user_id: Uuid,
        role: MemberRole,
        idempotency: Option<&ConversationIdempotency<'_>>,
    ) -> Result<Idempotent<Executed<Conversation>>, DispatchError> {
        let actor_id = ctx.user_id()?;
        let add = ConversationCommand::AddMember { actor_id, user_id, role };
        self.dispatcher
            .transact(ctx, idempotency, |uow| {
                let add = add.clone();
                Box::pin(async move {
                    if !all_active_users(uow, &[user_id]).await? {
                        return Err(DispatchError::NotFound("user"));
                    }
                    uow.execute::<Conversation>(&conversation_id.to_string(), add).await
                })
            })
            .await
    }

    /// Posts a message as the caller. Re-decidable: concurrent posters queue on the
    /// conversation's lock and never fail because of each other.
    pub async fn post_message(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        body: &str,
    ) -> Result<Executed<Conversation>, DispatchError> {
        self.post_message_with(ctx, conversation_id, body, None).await?.fresh()
    }

    #[tracing::instrument(skip_all)]
    pub async fn post_message_with(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        body: &str,
        idempotency: Option<&ConversationIdempotency<'_>>,
    ) -> Result<Idempotent<Executed<Conversation>>, DispatchError> {
        let author_id = ctx.user_id()?;
        let body = field("body", MessageBody::parse(body))?;
        let post = ConversationCommand::PostMessage { message_id: Uuid::now_v7(), author_id, body };
        if idempotency.is_none() {
            // Nothing to store beside the events: commit it with concurrent posts.
            return self.posts.execute(ctx, &conversation_id.to_string(), post).await.map(Idempotent::Fresh);
        }
        self.dispatcher
            .transact(ctx, idempotency, |uow| {
                let post = post.clone();
                Box::pin(async move { uow.execute::<Conversation>(&conversation_id.to_string(), post).await })
            })
            .await
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
