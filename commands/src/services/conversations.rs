//! Conversations: groups, their members and their messages.

use parley_aggregates::conversation::{Conversation, ConversationCommand, MemberRole};
use parley_aggregates::permissions::Permission;
use parley_aggregates::values::{MessageBody, Name};
use uuid::Uuid;

use super::{field, Commands};
use crate::context::CommandContext;
use crate::dispatcher::{Idempotency, Idempotent};
use crate::error::DispatchError;
use crate::unit_of_work::Executed;
use crate::write_side::{direct_pair_key, DIRECT_PAIR_CLAIM};
use parley_eventstore::claims;

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
                    let account_id = uow.context().account_id;
                    if !all_active_users(uow.conn(), account_id, &members).await? {
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

    /// [`Commands::add_member`] under an optional idempotency key. Without one, the join is
    /// committed with concurrent commands on the conversation, in a group.
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
        if idempotency.is_none() {
            // The user's being active is read without the lock, as the locked path reads it (no
            // row of theirs is locked there either): the conversation's state, which decides the
            // rest, is the group's.
            if !all_active_users(self.dispatcher.store.pool(), ctx.account_id, &[user_id]).await? {
                return Err(DispatchError::NotFound("user"));
            }
            return self.grouped.execute(ctx, &conversation_id.to_string(), add).await.map(Idempotent::Fresh);
        }
        self.dispatcher
            .transact(ctx, idempotency, |uow| {
                let add = add.clone();
                Box::pin(async move {
                    let account_id = uow.context().account_id;
                    if !all_active_users(uow.conn(), account_id, &[user_id]).await? {
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
        self.post_message_with(ctx, conversation_id, body, Vec::new(), None).await?.fresh()
    }

    /// [`Commands::post_message`] with the users the body mentions (resolved by the caller from
    /// the users read model: the write side reads no read model; the conversation keeps only its
    /// members among them), under an optional idempotency key.
    #[tracing::instrument(skip_all)]
    pub async fn post_message_with(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        body: &str,
        mentions: Vec<Uuid>,
        idempotency: Option<&ConversationIdempotency<'_>>,
    ) -> Result<Idempotent<Executed<Conversation>>, DispatchError> {
        let author_id = ctx.user_id()?;
        let body = field("body", MessageBody::parse(body))?;
        let post = ConversationCommand::PostMessage { message_id: Uuid::now_v7(), author_id, body, mentions };
        if idempotency.is_none() {
            // Nothing to store beside the events: commit it with concurrent posts.
            return self
                .grouped
                .execute(ctx, &conversation_id.to_string(), post)
                .await
                .map(Idempotent::Fresh);
        }
        self.dispatcher
            .transact(ctx, idempotency, |uow| {
                let post = post.clone();
                Box::pin(async move { uow.execute::<Conversation>(&conversation_id.to_string(), post).await })
            })
            .await
    }
}

/// The outcome of asking for the direct conversation of two users.
#[derive(Debug)]
pub enum DirectStarted {
    Created(Box<Executed<Conversation>>),
    /// The pair already has one: this.
    Existing(Uuid),
}

impl Commands {
    /// The direct conversation of the caller and `other_id`: started now, or the one they have.
    /// Exactly one per pair, even when both ask at once: the pair is claimed in the append's
    /// transaction, and the loser of a race gets the winner's conversation.
    #[tracing::instrument(skip_all)]
    pub async fn start_direct_with(
        &self,
        ctx: &CommandContext,
        other_id: Uuid,
        idempotency: Option<&ConversationIdempotency<'_>>,
    ) -> Result<Idempotent<DirectStarted>, DispatchError> {
        ctx.require(Permission::ConversationsCreate)?;
        let creator_id = ctx.user_id()?;
        if other_id == creator_id {
            return Err(DispatchError::Invalid {
                field: "member_ids",
                message: "a direct conversation is with someone else".into(),
            });
        }
        let pair = direct_pair_key(ctx.account_id, creator_id, other_id);
        let existing = |holder: &parley_eventstore::StreamKey| holder.stream_id.parse::<Uuid>().ok();
        let mut conn = self.dispatcher.store.pool().acquire().await?;
        if let Some(id) =
            claims::holder(&mut conn, DIRECT_PAIR_CLAIM, &pair).await?.as_ref().and_then(existing)
        {
            return Ok(Idempotent::Fresh(DirectStarted::Existing(id)));
        }
        drop(conn);
        let conversation_id = Uuid::now_v7();
        let start = ConversationCommand::StartDirect {
            conversation_id,
            account_id: ctx.account_id,
            creator_id,
            other_id,
        };
        let started = self
            .dispatcher
            .transact(ctx, idempotency, |uow| {
                let start = start.clone();
                Box::pin(async move {
                    let account_id = uow.context().account_id;
                    if !all_active_users(uow.conn(), account_id, &[other_id]).await? {
                        return Err(DispatchError::Invalid {
                            field: "member_ids",
                            message: "contains an unknown user".into(),
                        });
                    }
                    uow.execute::<Conversation>(&conversation_id.to_string(), start).await
                })
            })
            .await;
        match started {
            Ok(Idempotent::Fresh(done)) => Ok(Idempotent::Fresh(DirectStarted::Created(Box::new(done)))),
            Ok(Idempotent::Replayed(stored)) => Ok(Idempotent::Replayed(stored)),
            Err(DispatchError::Claimed { kind: DIRECT_PAIR_CLAIM, holder }) => match existing(&holder) {
                Some(id) => Ok(Idempotent::Fresh(DirectStarted::Existing(id))),
                None => Err(DispatchError::Claimed { kind: DIRECT_PAIR_CLAIM, holder }),
            },
            Err(e) => Err(e),
        }
    }

    /// Changes a group's title and/or topic (`Some(None)` clears the topic); its admins only.
    #[tracing::instrument(skip_all)]
    pub async fn update_conversation(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        title: Option<&str>,
        topic: Option<Option<String>>,
    ) -> Result<Executed<Conversation>, DispatchError> {
        let actor_id = ctx.user_id()?;
        let title = title.map(|t| field("title", Name::parse(t))).transpose()?;
        if let Some(Some(t)) = &topic {
            if t.chars().count() > TOPIC_MAX {
                return Err(DispatchError::Invalid {
                    field: "topic",
                    message: format!("must be at most {TOPIC_MAX} characters"),
                });
            }
        }
        let update = ConversationCommand::Update { actor_id, title, topic };
        self.dispatcher.execute::<Conversation>(ctx, &conversation_id.to_string(), update).await
    }

    /// Archives a conversation: gone from lists and reads. A conversation admin, or a holder of
    /// `conversations.manage`.
    #[tracing::instrument(skip_all)]
    pub async fn archive_conversation(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
    ) -> Result<Executed<Conversation>, DispatchError> {
        let actor_id = ctx.actor_id()?;
        let moderator = ctx.actor.can(Permission::ConversationsManage);
        let archive = ConversationCommand::Archive { actor_id, moderator };
        self.dispatcher.execute::<Conversation>(ctx, &conversation_id.to_string(), archive).await
    }

    /// Removes a member from a group: an admin removes anyone, a member leaves.
    #[tracing::instrument(skip_all)]
    pub async fn remove_member(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        user_id: Uuid,
    ) -> Result<Executed<Conversation>, DispatchError> {
        let actor_id = ctx.user_id()?;
        let remove = ConversationCommand::RemoveMember { actor_id, user_id };
        // Decided on the conversation's state alone: committed with concurrent commands on it.
        self.grouped.execute(ctx, &conversation_id.to_string(), remove).await
    }
}

/// A topic is at most this long.
const TOPIC_MAX: usize = 2000;

/// Whether every id is an active user of `account_id` (write-side index rows).
async fn all_active_users<'c>(
    db: impl sqlx::PgExecutor<'c>,
    account_id: Uuid,
    ids: &[Uuid],
) -> Result<bool, DispatchError> {
    if ids.is_empty() {
        return Ok(true);
    }
    let (found,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM user_facts WHERE account_id = $1 AND active AND user_id = ANY($2)",
    )
    .bind(account_id)
    .bind(ids)
    .fetch_one(db)
    .await?;
    Ok(found == ids.len() as i64)
}
