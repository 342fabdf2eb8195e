//! Who may see what on the creator platform, and the use cases that decide it: a stream's chat
//! open to whoever may see the stream, and access grants given, revoked and bought. Decided on the
//! write side's facts (`stream_chats`, `access_grant_facts`), never on a read model, so a grant
//! just given counts at once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use parley_aggregates::conversation::{Conversation, ConversationCommand};
use parley_aggregates::creator::{AccessGrant, AccessGrantCommand, Experience, GrantSource};
use parley_aggregates::permissions::Permission;
use parley_aggregates::user::User;
use parley_aggregates::DomainError;
use uuid::Uuid;

use super::{Creator, CHECKOUT_SESSION_CLAIM};
use crate::context::{Actor, CommandContext};
use crate::dispatcher::{Idempotency, Idempotent};
use crate::error::DispatchError;
use crate::unit_of_work::Executed;

/// The stream chats of a node's creator platform as far as it has asked, and the conversations
/// known not to be one: every `POST /messages` asks. A conversation is a stream's chat from the
/// transaction that creates it (`stream_chats` is written with the stream's `StreamStarted`,
/// beside the conversation's first event) or never, and the fact is never changed or removed, so
/// an answer holds for good: a chat is remembered at once, a conversation that is not one once
/// its stream exists (before that, nobody but its creator's transaction knows its id). Cleared
/// whole past [`KNOWN_CHATS`] entries.
#[derive(Clone, Default)]
pub(crate) struct KnownChats(Arc<RwLock<HashMap<Uuid, Option<Chat>>>>);

/// A stream chat's experience and account.
type Chat = (Uuid, Uuid);

/// Conversations a node remembers the chat fact of, at most.
const KNOWN_CHATS: usize = 100_000;

impl KnownChats {
    fn get(&self, conversation_id: Uuid) -> Option<Option<Chat>> {
        self.0.read().ok()?.get(&conversation_id).copied()
    }

    fn remember(&self, conversation_id: Uuid, chat: Option<Chat>) {
        if let Ok(mut known) = self.0.write() {
            if known.len() >= KNOWN_CHATS {
                known.clear();
            }
            known.insert(conversation_id, chat);
        }
    }
}

impl Creator {
    // --- a stream's chat ---

    /// The experience and account of the stream whose chat `conversation_id` is, if it is one.
    async fn chat_of(&self, conversation_id: Uuid) -> Result<Option<Chat>, DispatchError> {
        if let Some(known) = self.chats.get(conversation_id) {
            return Ok(known);
        }
        let pool = self.commands.dispatcher().store().pool();
        let (experience_id, account_id, exists): (Option<Uuid>, Option<Uuid>, bool) = sqlx::query_as(
            "SELECT c.experience_id, c.account_id, \
                    EXISTS (SELECT 1 FROM events WHERE stream_type = $2 AND stream_id = $1::text) \
             FROM (VALUES (1)) AS one LEFT JOIN stream_chats c ON c.conversation_id = $1",
        )
        .bind(conversation_id)
        .bind(Conversation::TYPE)
        .fetch_one(pool)
        .await
        .map_err(parley_eventstore::StoreError::from)?;
        let chat = experience_id.zip(account_id);
        if chat.is_some() || exists {
            self.chats.remember(conversation_id, chat);
        }
        Ok(chat)
    }

    /// Whether the actor reads `conversation_id` as a stream's chat: it is the chat of a stream
    /// of their account, and they hold `spaces.manage` or a grant to its experience live now.
    /// Decided on the write side's facts, so a grant just given counts at once.
    pub async fn chat_reader(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
    ) -> Result<bool, DispatchError> {
        let Some((experience_id, account_id)) = self.chat_of(conversation_id).await? else {
            return Ok(false);
        };
        if account_id != ctx.account_id {
            return Ok(false);
        }
        self.may_see(ctx, experience_id).await
    }

    /// Whether the actor may see the experience now: `spaces.manage`, or a live grant of the
    /// user's, from the write side's facts (a grant just given counts at once).
    pub async fn may_see(&self, ctx: &CommandContext, experience_id: Uuid) -> Result<bool, DispatchError> {
        if ctx.actor.can(Permission::SpacesManage) {
            return Ok(true);
        }
        let pool = self.commands.dispatcher().store().pool();
        let Ok(user_id) = ctx.user_id() else { return Ok(false) };
        let (granted,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM access_grant_facts WHERE user_id = $1 AND experience_id = $2 \
               AND active AND (expires_at IS NULL OR expires_at > $3))",
        )
        .bind(user_id)
        .bind(experience_id)
        .bind(self.now())
        .fetch_one(pool)
        .await
        .map_err(parley_eventstore::StoreError::from)?;
        Ok(granted)
    }

    /// Posts in a stream's chat as one who may see the stream (not a member of it).
    pub async fn post_as_reader(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        body: &str,
        idempotency: Option<&Idempotency<'_, Executed<Conversation>>>,
    ) -> Result<Idempotent<Executed<Conversation>>, DispatchError> {
        if !self.chat_reader(ctx, conversation_id).await? {
            return Err(DispatchError::NotFound("Conversation"));
        }
        let author_id = ctx.user_id()?;
        let body = parley_aggregates::values::MessageBody::parse(body)
            .map_err(|e| DispatchError::Invalid { field: "body", message: e.to_string() })?;
        let post = ConversationCommand::PostAsReader { message_id: Uuid::now_v7(), author_id, body };
        self.commands
            .dispatcher()
            .execute_with::<Conversation>(ctx, &conversation_id.to_string(), post, idempotency)
            .await
    }

    // --- access grants ---

    /// Gives a user of the account access to an experience until `expires_at` (in the future).
    pub async fn grant_access(
        &self,
        ctx: &CommandContext,
        user_id: Uuid,
        experience_id: Uuid,
        expires_at: Option<DateTime<Utc>>,
        idempotency: Option<&Idempotency<'_, Executed<AccessGrant>>>,
    ) -> Result<Idempotent<Executed<AccessGrant>>, DispatchError> {
        ctx.require(Permission::SpacesManage)?;
        let granted_by = ctx.actor_id()?;
        if expires_at.is_some_and(|at| at <= self.now()) {
            return Err(DispatchError::Invalid {
                field: "expires_at",
                message: "must be in the future".into(),
            });
        }
        self.grant(ctx, user_id, experience_id, expires_at, GrantSource::Manual { granted_by }, idempotency)
            .await
    }

    async fn grant(
        &self,
        ctx: &CommandContext,
        user_id: Uuid,
        experience_id: Uuid,
        expires_at: Option<DateTime<Utc>>,
        source: GrantSource,
        idempotency: Option<&Idempotency<'_, Executed<AccessGrant>>>,
    ) -> Result<Idempotent<Executed<AccessGrant>>, DispatchError> {
        let (grant_id, account_id) = (Uuid::now_v7(), ctx.account_id);
        self.commands
            .dispatcher()
            .transact(ctx, idempotency, move |uow| {
                let source = source.clone();
                Box::pin(async move {
                    let (user, head) = uow.load::<User>(&user_id.to_string()).await?;
                    if head.version == 0 || !user.active {
                        return Err(DispatchError::Invalid {
                            field: "user_id",
                            message: "is not an active user of this account".into(),
                        });
                    }
                    let (experience, _) = uow.load::<Experience>(&experience_id.to_string()).await?;
                    experience.live().map_err(DomainError::from)?;
                    let grant = AccessGrantCommand::Grant {
                        grant_id,
                        account_id,
                        user_id,
                        experience_id,
                        expires_at,
                        source,
                    };
                    uow.execute::<AccessGrant>(&grant_id.to_string(), grant).await
                })
            })
            .await
    }

    pub async fn revoke_grant(
        &self,
        ctx: &CommandContext,
        grant_id: Uuid,
    ) -> Result<Executed<AccessGrant>, DispatchError> {
        ctx.require(Permission::SpacesManage)?;
        let revoke = AccessGrantCommand::Revoke { by: ctx.actor_id()? };
        self.commands.dispatcher().execute::<AccessGrant>(ctx, &grant_id.to_string(), revoke).await
    }

    /// A paid checkout: grants the user access to the experience once per session id. `None`
    /// when this session already granted it (a repeated delivery), or when the experience or
    /// the user is not there (nothing to grant; the provider is answered 200 all the same).
    pub async fn grant_from_checkout(
        &self,
        experience_id: Uuid,
        user_id: Uuid,
        session_id: &str,
    ) -> Result<Option<Executed<AccessGrant>>, DispatchError> {
        let Some(experience) =
            self.commands.dispatcher().load::<Experience>(&experience_id.to_string()).await?
        else {
            return Ok(None);
        };
        if experience.aggregate.live().is_err() {
            return Ok(None);
        }
        let ctx = CommandContext::new(experience.account_id, Actor::system());
        let source = GrantSource::Checkout { session_id: session_id.to_owned() };
        match self.grant(&ctx, user_id, experience_id, None, source, None).await {
            Ok(done) => Ok(Some(done.fresh()?)),
            Err(DispatchError::Claimed { kind: CHECKOUT_SESSION_CLAIM, .. }) => Ok(None),
            Err(DispatchError::NotFound(_) | DispatchError::Invalid { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
