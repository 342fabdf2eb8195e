//! One message's changes, its reactions, and read markers. Each is decided by the conversation
//! on the message's write-side facts, read under the conversation's lock in the same transaction
//! that appends, so two requests never decide on the same stale fact.

use cqrs_es::Aggregate;
use parley_aggregates::conversation::{
    Conversation, ConversationCommand, ConversationEvent, MessageFact, ReactionFact,
};
use parley_aggregates::permissions::Permission;
use parley_aggregates::values::{Emoji, MessageBody};
use parley_eventstore::StreamKey;
use uuid::Uuid;

use super::{field, Commands, ConversationIdempotency};
use crate::context::CommandContext;
use crate::dispatcher::{Idempotency, Idempotent};
use crate::error::DispatchError;
use crate::group_commit::Alone;
use crate::unit_of_work::{Executed, UnitOfWork};

/// A reaction, as its command left it: made now, or the one the user already had.
#[derive(Debug)]
pub struct Reacted {
    pub done: Executed<Conversation>,
    pub reaction: ReactionFact,
    pub created: bool,
}

fn stream(conversation_id: Uuid) -> StreamKey {
    StreamKey::new(Conversation::TYPE, conversation_id.to_string())
}

/// The facts of a message of this conversation (of another, or none: `None`).
async fn message_fact<'e>(
    db: impl sqlx::PgExecutor<'e>,
    conversation_id: Uuid,
    message_id: Uuid,
) -> Result<Option<MessageFact>, DispatchError> {
    let row: Option<(Uuid, bool, i32)> = sqlx::query_as(
        "SELECT author_id, deleted, version FROM message_facts WHERE message_id = $1 AND conversation_id = $2",
    )
    .bind(message_id)
    .bind(conversation_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(author_id, deleted, version)| MessageFact { message_id, author_id, deleted, version }))
}

/// A reaction of the account, with the conversation it is in.
async fn reaction_fact<'e>(
    db: impl sqlx::PgExecutor<'e>,
    account_id: Uuid,
    reaction_id: Uuid,
) -> Result<Option<(Uuid, ReactionFact)>, DispatchError> {
    let row: Option<(Uuid, Uuid, Uuid, String)> = sqlx::query_as(
        "SELECT conversation_id, message_id, user_id, emoji FROM reaction_facts \
         WHERE reaction_id = $1 AND account_id = $2",
    )
    .bind(reaction_id)
    .bind(account_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(conversation_id, message_id, user_id, emoji)| {
        (conversation_id, ReactionFact { reaction_id, message_id, user_id, emoji })
    }))
}

/// The conversation a message of the caller's account belongs to.
async fn conversation_of_message(
    commands: &Commands,
    account_id: Uuid,
    message_id: Uuid,
) -> Result<Uuid, DispatchError> {
    let row: Option<(Uuid,)> =
        sqlx::query_as("SELECT conversation_id FROM message_facts WHERE message_id = $1 AND account_id = $2")
            .bind(message_id)
            .bind(account_id)
            .fetch_optional(commands.dispatcher.store.pool())
            .await?;
    row.map(|(c,)| c).ok_or(DispatchError::NotFound("message"))
}

/// A reaction asked for: by whom, to which message, with which emoji, and the id it gets if new.
#[derive(Clone)]
struct Reaction {
    conversation_id: Uuid,
    message_id: Uuid,
    actor_id: Uuid,
    emoji: Emoji,
    reaction_id: Uuid,
}

impl Reaction {
    /// The message's facts (`None`: not this conversation's) and the id of the user's reaction
    /// with this emoji to it, if it has one, in one query.
    async fn facts<'e>(
        &self,
        db: impl sqlx::PgExecutor<'e>,
    ) -> Result<(Option<MessageFact>, Option<Uuid>), DispatchError> {
        let row: Option<(Uuid, bool, i32, Option<Uuid>)> = sqlx::query_as(
            "SELECT m.author_id, m.deleted, m.version, r.reaction_id FROM message_facts m \
             LEFT JOIN reaction_facts r ON r.message_id = m.message_id AND r.user_id = $3 AND r.emoji = $4 \
             WHERE m.message_id = $1 AND m.conversation_id = $2",
        )
        .bind(self.message_id)
        .bind(self.conversation_id)
        .bind(self.actor_id)
        .bind(self.emoji.as_str())
        .fetch_optional(db)
        .await?;
        Ok(match row {
            Some((author_id, deleted, version, existing)) => {
                let message_id = self.message_id;
                (Some(MessageFact { message_id, author_id, deleted, version }), existing)
            }
            None => (None, None),
        })
    }

    fn command(&self, message: Option<MessageFact>, existing: Option<Uuid>) -> ConversationCommand {
        ConversationCommand::AddReaction {
            reaction_id: self.reaction_id,
            actor_id: self.actor_id,
            message,
            emoji: self.emoji.clone(),
            existing,
        }
    }

    fn fact(&self, reaction_id: Uuid) -> ReactionFact {
        ReactionFact {
            reaction_id,
            message_id: self.message_id,
            user_id: self.actor_id,
            emoji: self.emoji.as_str().to_owned(),
        }
    }

    /// Decides the reaction on the facts read under the conversation's lock.
    async fn add_locked(self, uow: &mut UnitOfWork) -> Result<Reacted, DispatchError> {
        uow.lock(&[stream(self.conversation_id)]).await?;
        let (message, existing) = self.facts(uow.conn()).await?;
        let react = self.command(message, existing);
        let done = uow.execute::<Conversation>(&self.conversation_id.to_string(), react).await?;
        let reaction = self.fact(existing.unwrap_or(self.reaction_id));
        Ok(Reacted { done, reaction, created: existing.is_none() })
    }
}

impl Commands {
    /// Runs `command(facts)` on the conversation, committed with concurrent commands on it in a
    /// group, decided on the message's facts read without the lock. Two commands changing one
    /// message never share a group (`WriteSide::unique_rows`), and the write side moves the
    /// message's version only from the one decided on, refusing the group otherwise; run alone
    /// (refused in its group, the group failed), the command reads the facts under the lock.
    async fn on_message(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        message_id: Uuid,
        command: impl Fn(Option<MessageFact>) -> ConversationCommand + Clone + Send + Sync + 'static,
    ) -> Result<Executed<Conversation>, DispatchError> {
        let fact = message_fact(self.dispatcher.store.pool(), conversation_id, message_id).await?;
        let decided = command(fact);
        let alone: Alone<Conversation> = {
            let (commands, ctx) = (self.clone(), ctx.clone());
            Box::new(move || {
                Box::pin(async move {
                    commands.on_message_with(&ctx, conversation_id, message_id, None, command).await?.fresh()
                })
            })
        };
        self.grouped.execute_or(ctx, &conversation_id.to_string(), decided, Some(alone)).await
    }

    /// [`Commands::on_message`] under an optional idempotency key.
    async fn on_message_with(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        message_id: Uuid,
        idempotency: Option<&ConversationIdempotency<'_>>,
        command: impl Fn(Option<MessageFact>) -> ConversationCommand + Clone + Send + Sync + 'static,
    ) -> Result<Idempotent<Executed<Conversation>>, DispatchError> {
        self.dispatcher
            .transact(ctx, idempotency, move |uow| {
                let command = command.clone();
                Box::pin(async move {
                    uow.lock(&[stream(conversation_id)]).await?;
                    let fact = message_fact(uow.conn(), conversation_id, message_id).await?;
                    uow.execute::<Conversation>(&conversation_id.to_string(), command(fact)).await
                })
            })
            .await
    }

    /// Replaces a message's body; its author only. `expected_version` is the client's If-Match.
    #[tracing::instrument(skip_all)]
    pub async fn edit_message(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        message_id: Uuid,
        body: &str,
        expected_version: Option<i64>,
    ) -> Result<Executed<Conversation>, DispatchError> {
        let actor_id = ctx.user_id()?;
        let body = field("body", MessageBody::parse(body))?;
        let expected_version = expected_version.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
        self.on_message(ctx, conversation_id, message_id, move |message| ConversationCommand::EditMessage {
            actor_id,
            message,
            body: body.clone(),
            expected_version,
        })
        .await
    }

    /// Deletes a message: its author, a conversation admin, or a holder of `messages.moderate`.
    #[tracing::instrument(skip_all)]
    pub async fn delete_message(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        message_id: Uuid,
    ) -> Result<Executed<Conversation>, DispatchError> {
        let actor_id = ctx.actor_id()?;
        let moderator = ctx.actor.can(Permission::MessagesModerate);
        self.on_message(ctx, conversation_id, message_id, move |message| ConversationCommand::DeleteMessage {
            actor_id,
            message,
            moderator,
        })
        .await
    }

    /// The member has read up to `message_id`. Without an idempotency key the mark is committed
    /// with concurrent posts and marks, in a group.
    #[tracing::instrument(skip_all)]
    pub async fn mark_read(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        message_id: Uuid,
        idempotency: Option<&ConversationIdempotency<'_>>,
    ) -> Result<Idempotent<Executed<Conversation>>, DispatchError> {
        let user_id = ctx.user_id()?;
        if idempotency.is_none() {
            // The mark needs only that the message is the conversation's, and a message's fact,
            // once committed, stays (a deleted message keeps its place): read without the lock,
            // it still holds when the group decides.
            let message = message_fact(self.dispatcher.store.pool(), conversation_id, message_id).await?;
            let read = ConversationCommand::MarkRead { user_id, message };
            return self
                .grouped
                .execute(ctx, &conversation_id.to_string(), read)
                .await
                .map(Idempotent::Fresh);
        }
        let read = move |message| ConversationCommand::MarkRead { user_id, message };
        self.on_message_with(ctx, conversation_id, message_id, idempotency, read).await
    }

    /// Reacts to a message with one emoji; the same user and emoji again is the same reaction.
    /// Without an idempotency key a new reaction is committed with concurrent commands, in a group.
    #[tracing::instrument(skip_all)]
    pub async fn add_reaction(
        &self,
        ctx: &CommandContext,
        message_id: Uuid,
        emoji: &str,
        idempotency: Option<&Idempotency<'_, Reacted>>,
    ) -> Result<Idempotent<Reacted>, DispatchError> {
        let actor_id = ctx.user_id()?;
        let emoji = Emoji::parse(emoji)
            .map_err(|e| DispatchError::Invalid { field: "emoji", message: e.to_string() })?;
        let conversation_id = conversation_of_message(self, ctx.account_id, message_id).await?;
        let reaction = Reaction { conversation_id, message_id, actor_id, emoji, reaction_id: Uuid::now_v7() };
        if idempotency.is_none() {
            if let Some(reacted) = self.add_reaction_grouped(ctx, &reaction).await? {
                return Ok(Idempotent::Fresh(reacted));
            }
        }
        self.dispatcher
            .transact(ctx, idempotency, |uow| {
                let reaction = reaction.clone();
                Box::pin(async move { reaction.add_locked(uow).await })
            })
            .await
    }

    /// A new reaction committed in a group, decided on the message's fact and the user's
    /// reactions read before it, without the lock; `None` when the user has it already (the
    /// locked path answers). Run alone (refused in the group, a twin of a reaction in the same
    /// group, the group failed), it reads both again under the conversation's lock; and the
    /// write side adds the reaction's row only to a message that is still not deleted.
    async fn add_reaction_grouped(
        &self,
        ctx: &CommandContext,
        reaction: &Reaction,
    ) -> Result<Option<Reacted>, DispatchError> {
        let pool = self.dispatcher.store.pool();
        let (message, None) = reaction.facts(pool).await? else { return Ok(None) };
        let react = reaction.command(message, None);
        let alone: Alone<Conversation> = {
            let (commands, ctx, reaction) = (self.clone(), ctx.clone(), reaction.clone());
            Box::new(move || {
                Box::pin(async move {
                    let reacted = commands
                        .dispatcher
                        .transact(&ctx, None, |uow| {
                            let reaction = reaction.clone();
                            Box::pin(async move { reaction.add_locked(uow).await })
                        })
                        .await?
                        .fresh()?;
                    Ok(reacted.done)
                })
            })
        };
        let stream_id = reaction.conversation_id.to_string();
        let done = self.grouped.execute_or(ctx, &stream_id, react, Some(alone)).await?;
        // Made now; or, run alone after a twin made it, found.
        let created = done.events.iter().any(|e| matches!(e, ConversationEvent::ReactionAdded { .. }));
        let reaction_id = match created {
            true => reaction.reaction_id,
            false => reaction.facts(pool).await?.1.ok_or(DispatchError::NotFound("reaction"))?,
        };
        Ok(Some(Reacted { done, reaction: reaction.fact(reaction_id), created }))
    }

    /// Takes a reaction back; its author only. Committed with concurrent commands on the
    /// conversation, in a group, decided on the reaction's row read without the lock; run alone
    /// (a twin removal in flight, refused in the group, the group failed), it reads the row again
    /// under the conversation's lock. The write side deletes the row, or refuses: a removal
    /// that landed meanwhile took it.
    #[tracing::instrument(skip_all)]
    pub async fn remove_reaction(
        &self,
        ctx: &CommandContext,
        reaction_id: Uuid,
    ) -> Result<Executed<Conversation>, DispatchError> {
        let actor_id = ctx.user_id()?;
        let pool = self.dispatcher.store.pool();
        let (conversation_id, reaction) = reaction_fact(pool, ctx.account_id, reaction_id)
            .await?
            .ok_or(DispatchError::NotFound("reaction"))?;
        let remove = ConversationCommand::RemoveReaction { actor_id, reaction: Some(reaction) };
        let alone: Alone<Conversation> = {
            let (commands, ctx) = (self.clone(), ctx.clone());
            Box::new(move || {
                Box::pin(
                    async move { commands.remove_reaction_locked(&ctx, conversation_id, reaction_id).await },
                )
            })
        };
        self.grouped.execute_or(ctx, &conversation_id.to_string(), remove, Some(alone)).await
    }

    /// [`Commands::remove_reaction`] decided under the conversation's lock.
    async fn remove_reaction_locked(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        reaction_id: Uuid,
    ) -> Result<Executed<Conversation>, DispatchError> {
        let actor_id = ctx.user_id()?;
        self.dispatcher
            .transact(ctx, None, |uow| {
                Box::pin(async move {
                    uow.lock(&[stream(conversation_id)]).await?;
                    let account_id = uow.context().account_id;
                    let reaction = reaction_fact(uow.conn(), account_id, reaction_id).await?.map(|(_, r)| r);
                    let remove = ConversationCommand::RemoveReaction { actor_id, reaction };
                    uow.execute::<Conversation>(&conversation_id.to_string(), remove).await
                })
            })
            .await?
            .fresh()
    }
}
