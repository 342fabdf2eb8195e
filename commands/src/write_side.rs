//! What each aggregate needs written beside its events, in the same transaction: uniqueness
//! claims and write-side index rows. Derived from the new events alone, so `handle` stays pure.

use std::future::Future;

use cqrs_es::Aggregate;
use parley_aggregates::account::Account;
use parley_aggregates::api_key::{ApiKey, ApiKeyEvent};
use parley_aggregates::conversation::{Conversation, ConversationEvent, DIRECT};
use parley_aggregates::creator::{AccessGrantEvent, GrantSource, SpaceEvent, StreamEvent};
use parley_aggregates::invitation::{Invitation, InvitationEvent};
use parley_aggregates::role::{Role, RoleEvent};
use parley_aggregates::session::{Session, SessionEvent};
use parley_aggregates::user::{User, UserEvent};
use parley_aggregates::DomainError;
use parley_eventstore::claims::{self, ClaimOutcome};
use parley_eventstore::StreamKey;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::DispatchError;

/// The claim kind that keeps one user per email across the whole system.
pub const EMAIL_CLAIM: &str = "user_email";

/// An aggregate the dispatcher can run.
pub trait WriteSide:
    Aggregate<Services = (), Error: Into<DomainError>, Command: Clone + Send + Sync + 'static, Event: 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
    /// Snapshot the state every this many events; 0 for never.
    const SNAPSHOT_EVERY: i64 = 0;
    /// The shape of the serialized state; snapshots of another shape are ignored.
    const STATE_VERSION: i32 = 1;

    /// Writes the claims and index rows `events` require, in the append's transaction.
    fn write_side(
        _conn: &mut PgConnection,
        _account_id: Uuid,
        _stream: &StreamKey,
        _events: &[Self::Event],
    ) -> impl Future<Output = Result<(), DispatchError>> + Send {
        async { Ok(()) }
    }

    /// The same for the commands of a group commit, each `(account, stream, events)`: one
    /// statement for all of them where the aggregate can.
    fn write_side_all(
        conn: &mut PgConnection,
        written: &[(Uuid, &StreamKey, &[Self::Event])],
    ) -> impl Future<Output = Result<(), DispatchError>> + Send {
        async move {
            for (account_id, stream, events) in written {
                Self::write_side(conn, *account_id, stream, events).await?;
            }
            Ok(())
        }
    }
}

impl WriteSide for Account {}

impl WriteSide for parley_aggregates::inbox::Inbox {}

impl WriteSide for parley_aggregates::analytics::AnalyticsDay {}

impl WriteSide for Session {
    async fn write_side(
        conn: &mut PgConnection,
        account_id: Uuid,
        _stream: &StreamKey,
        events: &[SessionEvent],
    ) -> Result<(), DispatchError> {
        for event in events {
            let (session_id, user_id, hash) = match event {
                SessionEvent::SessionStarted { session_id, user_id, refresh_token_hash, .. }
                | SessionEvent::RefreshTokenRotated { session_id, user_id, refresh_token_hash, .. } => {
                    (session_id, user_id, refresh_token_hash)
                }
                SessionEvent::SessionEnded { .. } => continue,
            };
            sqlx::query("INSERT INTO session_tokens (token_hash, session_id, account_id, user_id) VALUES ($1, $2, $3, $4)")
                .bind(hash)
                .bind(session_id)
                .bind(account_id)
                .bind(user_id)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

impl WriteSide for User {
    async fn write_side(
        conn: &mut PgConnection,
        account_id: Uuid,
        stream: &StreamKey,
        events: &[UserEvent],
    ) -> Result<(), DispatchError> {
        for event in events {
            match event {
                UserEvent::UserRegistered { user_id, email, .. } => {
                    if let ClaimOutcome::Taken(holder) =
                        claims::claim(conn, account_id, EMAIL_CLAIM, email, stream).await?
                    {
                        return Err(DispatchError::Claimed { kind: EMAIL_CLAIM, holder });
                    }
                    sqlx::query("INSERT INTO user_facts (user_id, account_id) VALUES ($1, $2)")
                        .bind(user_id)
                        .bind(account_id)
                        .execute(&mut *conn)
                        .await?;
                }
                UserEvent::UserRolesChanged { .. }
                | UserEvent::UserProfileUpdated { .. }
                | UserEvent::PasswordChanged { .. } => {}
                UserEvent::UserDeactivated { user_id, .. } => {
                    sqlx::query("UPDATE user_facts SET active = false WHERE user_id = $1")
                        .bind(user_id)
                        .execute(&mut *conn)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

impl WriteSide for Invitation {
    async fn write_side(
        conn: &mut PgConnection,
        account_id: Uuid,
        _stream: &StreamKey,
        events: &[InvitationEvent],
    ) -> Result<(), DispatchError> {
        for event in events {
            if let InvitationEvent::InvitationCreated { invitation_id, token_hash, .. } = event {
                sqlx::query("INSERT INTO invitation_facts (token_hash, invitation_id, account_id) VALUES ($1, $2, $3)")
                    .bind(token_hash)
                    .bind(invitation_id)
                    .bind(account_id)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok(())
    }
}

/// The claim that keeps one direct conversation per pair of users.
pub const DIRECT_PAIR_CLAIM: &str = "direct_pair";

/// The claim value of the direct conversation of two users of an account (in either order).
pub fn direct_pair_key(account_id: Uuid, a: Uuid, b: Uuid) -> String {
    let (low, high) = if a < b { (a, b) } else { (b, a) };
    format!("{account_id}/{low}/{high}")
}

impl WriteSide for Conversation {
    /// A conversation may hold 100,000 messages: load from a snapshot plus at most this many events.
    const SNAPSHOT_EVERY: i64 = 100;
    /// 2: members' read markers and the topic joined the state.
    const STATE_VERSION: i32 = 2;

    async fn write_side(
        conn: &mut PgConnection,
        account_id: Uuid,
        stream: &StreamKey,
        events: &[ConversationEvent],
    ) -> Result<(), DispatchError> {
        Self::write_side_all(conn, &[(account_id, stream, events)]).await
    }

    /// Every posted message's index row in one statement; the rarer facts one by one.
    async fn write_side_all(
        conn: &mut PgConnection,
        written: &[(Uuid, &StreamKey, &[ConversationEvent])],
    ) -> Result<(), DispatchError> {
        let (mut conversations, mut messages, mut accounts, mut authors) = (vec![], vec![], vec![], vec![]);
        for (account_id, stream, events) in written {
            for event in *events {
                match event {
                    ConversationEvent::MessagePosted { message_id, conversation_id, author_id, .. } => {
                        conversations.push(*conversation_id);
                        messages.push(*message_id);
                        accounts.push(*account_id);
                        authors.push(*author_id);
                    }
                    other => conversation_fact(conn, *account_id, stream, other, events).await?,
                }
            }
        }
        if messages.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO message_facts (conversation_id, message_id, account_id, author_id) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[])",
        )
        .bind(&conversations)
        .bind(&messages)
        .bind(&accounts)
        .bind(&authors)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// The index rows and claims of one conversation event other than a post (`events`: the
/// command's events, for the members of a direct conversation it starts).
async fn conversation_fact(
    conn: &mut PgConnection,
    account_id: Uuid,
    stream: &StreamKey,
    event: &ConversationEvent,
    events: &[ConversationEvent],
) -> Result<(), DispatchError> {
    match event {
        ConversationEvent::ConversationStarted { kind, .. } if kind == DIRECT => {
            let members: Vec<Uuid> = events
                .iter()
                .filter_map(|e| match e {
                    ConversationEvent::MemberAdded { user_id, .. } => Some(*user_id),
                    _ => None,
                })
                .collect();
            if let [a, b] = members[..] {
                let value = direct_pair_key(account_id, a, b);
                if let ClaimOutcome::Taken(holder) =
                    claims::claim(conn, account_id, DIRECT_PAIR_CLAIM, &value, stream).await?
                {
                    return Err(DispatchError::Claimed { kind: DIRECT_PAIR_CLAIM, holder });
                }
            }
        }
        // An archived direct conversation frees its pair for a new one.
        ConversationEvent::ConversationArchived { .. } => {
            sqlx::query(
                "DELETE FROM claims WHERE kind = $1 AND owner_stream_type = $2 AND owner_stream_id = $3",
            )
            .bind(DIRECT_PAIR_CLAIM)
            .bind(&stream.stream_type)
            .bind(&stream.stream_id)
            .execute(&mut *conn)
            .await?;
        }
        ConversationEvent::MessageEdited { message_id, version, .. } => {
            sqlx::query("UPDATE message_facts SET version = $2 WHERE message_id = $1")
                .bind(message_id)
                .bind(version)
                .execute(&mut *conn)
                .await?;
        }
        ConversationEvent::MessageDeleted { message_id, version, .. } => {
            sqlx::query("UPDATE message_facts SET deleted = true, version = $2 WHERE message_id = $1")
                .bind(message_id)
                .bind(version)
                .execute(&mut *conn)
                .await?;
        }
        ConversationEvent::ReactionAdded { reaction_id, message_id, conversation_id, user_id, emoji } => {
            sqlx::query(
                "INSERT INTO reaction_facts (reaction_id, message_id, conversation_id, account_id, user_id, emoji) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(reaction_id)
            .bind(message_id)
            .bind(conversation_id)
            .bind(account_id)
            .bind(user_id)
            .bind(emoji)
            .execute(&mut *conn)
            .await?;
        }
        ConversationEvent::ReactionRemoved { reaction_id, .. } => {
            sqlx::query("DELETE FROM reaction_facts WHERE reaction_id = $1")
                .bind(reaction_id)
                .execute(&mut *conn)
                .await?;
        }
        _ => {}
    }
    Ok(())
}

impl WriteSide for Role {
    /// A role's name is claimed in its account while the role lives; a rename claims the new
    /// name and frees the old one.
    async fn write_side(
        conn: &mut PgConnection,
        account_id: Uuid,
        stream: &StreamKey,
        events: &[RoleEvent],
    ) -> Result<(), DispatchError> {
        use crate::services::roles::{role_name_key, ROLE_NAME_CLAIM};
        for event in events {
            let keep = match event {
                RoleEvent::RoleCreated { name, .. } | RoleEvent::RoleUpdated { name, .. } => {
                    Some(role_name_key(account_id, name))
                }
                RoleEvent::RoleDeleted { .. } => None,
            };
            claims::release_other(conn, ROLE_NAME_CLAIM, stream, keep.as_deref()).await?;
            if let Some(value) = keep {
                if let ClaimOutcome::Taken(holder) =
                    claims::claim(conn, account_id, ROLE_NAME_CLAIM, &value, stream).await?
                {
                    return Err(DispatchError::Claimed { kind: ROLE_NAME_CLAIM, holder });
                }
            }
        }
        Ok(())
    }
}

impl WriteSide for parley_aggregates::creator::Space {
    /// A space's slug is claimed in its account while the space lives; a new slug frees the old.
    async fn write_side(
        conn: &mut PgConnection,
        account_id: Uuid,
        stream: &StreamKey,
        events: &[SpaceEvent],
    ) -> Result<(), DispatchError> {
        use crate::creator::{slug_key, PRIMARY_SPACE_CLAIM, SPACE_SLUG_CLAIM};
        for event in events {
            if let SpaceEvent::SpaceCreated { is_primary: true, .. } = event {
                if let ClaimOutcome::Taken(holder) =
                    claims::claim(conn, account_id, PRIMARY_SPACE_CLAIM, &account_id.to_string(), stream)
                        .await?
                {
                    return Err(DispatchError::Claimed { kind: PRIMARY_SPACE_CLAIM, holder });
                }
            }
            let keep = match event {
                SpaceEvent::SpaceCreated { slug, .. } | SpaceEvent::SpaceUpdated { slug, .. } => {
                    Some(slug_key(account_id, slug))
                }
                SpaceEvent::SpaceDeleted { .. } => None,
            };
            claims::release_other(conn, SPACE_SLUG_CLAIM, stream, keep.as_deref()).await?;
            if let Some(value) = keep {
                if let ClaimOutcome::Taken(holder) =
                    claims::claim(conn, account_id, SPACE_SLUG_CLAIM, &value, stream).await?
                {
                    return Err(DispatchError::Claimed { kind: SPACE_SLUG_CLAIM, holder });
                }
            }
        }
        Ok(())
    }
}

impl WriteSide for parley_aggregates::creator::Experience {}

impl WriteSide for parley_aggregates::creator::Stream {
    /// A stream that goes live names its chat: who may post there is decided on it.
    async fn write_side(
        conn: &mut PgConnection,
        account_id: Uuid,
        _stream: &StreamKey,
        events: &[StreamEvent],
    ) -> Result<(), DispatchError> {
        for event in events {
            if let StreamEvent::StreamStarted { stream_id, experience_id, conversation_id, .. } = event {
                sqlx::query(
                    "INSERT INTO stream_chats (conversation_id, stream_id, experience_id, account_id) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (conversation_id) DO NOTHING",
                )
                .bind(conversation_id)
                .bind(stream_id)
                .bind(experience_id)
                .bind(account_id)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }
}

impl WriteSide for parley_aggregates::creator::AccessGrant {
    /// A checkout session grants once: its id is claimed by the grant it made, for good.
    async fn write_side(
        conn: &mut PgConnection,
        account_id: Uuid,
        stream: &StreamKey,
        events: &[AccessGrantEvent],
    ) -> Result<(), DispatchError> {
        use crate::creator::CHECKOUT_SESSION_CLAIM;
        for event in events {
            match event {
                AccessGrantEvent::AccessGranted { grant_id, user_id, experience_id, expires_at, .. } => {
                    sqlx::query(
                        "INSERT INTO access_grant_facts (grant_id, account_id, user_id, experience_id, expires_at, active) \
                         VALUES ($1, $2, $3, $4, $5, true) ON CONFLICT (grant_id) DO NOTHING",
                    )
                    .bind(grant_id)
                    .bind(account_id)
                    .bind(user_id)
                    .bind(experience_id)
                    .bind(expires_at)
                    .execute(&mut *conn)
                    .await?;
                }
                AccessGrantEvent::AccessGrantRevoked { grant_id, .. }
                | AccessGrantEvent::AccessGrantExpired { grant_id, .. } => {
                    sqlx::query("UPDATE access_grant_facts SET active = false WHERE grant_id = $1")
                        .bind(grant_id)
                        .execute(&mut *conn)
                        .await?;
                }
            }
            if let AccessGrantEvent::AccessGranted { source: GrantSource::Checkout { session_id }, .. } =
                event
            {
                if let ClaimOutcome::Taken(holder) =
                    claims::claim(conn, account_id, CHECKOUT_SESSION_CLAIM, session_id, stream).await?
                {
                    return Err(DispatchError::Claimed { kind: CHECKOUT_SESSION_CLAIM, holder });
                }
            }
        }
        Ok(())
    }
}

impl WriteSide for ApiKey {
    /// A key is used often and its uses are events: load from a snapshot plus at most this many.
    const SNAPSHOT_EVERY: i64 = 100;

    /// The secret's hash, so that a node which has not yet seen the key in the log finds it.
    async fn write_side(
        conn: &mut PgConnection,
        account_id: Uuid,
        _stream: &StreamKey,
        events: &[ApiKeyEvent],
    ) -> Result<(), DispatchError> {
        for event in events {
            if let ApiKeyEvent::ApiKeyCreated { api_key_id, secret_hash, .. } = event {
                sqlx::query(
                    "INSERT INTO api_key_facts (secret_hash, api_key_id, account_id) VALUES ($1, $2, $3)",
                )
                .bind(secret_hash)
                .bind(api_key_id)
                .bind(account_id)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }
}

impl WriteSide for parley_aggregates::webhook::WebhookSubscription {}

impl WriteSide for parley_aggregates::webhook::IncomingWebhook {}

/// One live call per conversation: claimed when a call starts, released when it ends or is missed.
impl WriteSide for parley_aggregates::call::Call {
    async fn write_side(
        conn: &mut PgConnection,
        account_id: Uuid,
        stream: &StreamKey,
        events: &[parley_aggregates::call::CallEvent],
    ) -> Result<(), DispatchError> {
        use parley_aggregates::call::CallEvent;
        for event in events {
            match event {
                CallEvent::CallStarted { conversation_id, .. } => {
                    let value = conversation_id.to_string();
                    if let ClaimOutcome::Taken(holder) =
                        claims::claim(conn, account_id, crate::calls::LIVE_CALL_CLAIM, &value, stream).await?
                    {
                        return Err(DispatchError::Claimed { kind: crate::calls::LIVE_CALL_CLAIM, holder });
                    }
                }
                CallEvent::CallEnded { conversation_id, .. }
                | CallEvent::CallMissed { conversation_id, .. } => {
                    claims::release(
                        conn,
                        crate::calls::LIVE_CALL_CLAIM,
                        &conversation_id.to_string(),
                        stream,
                    )
                    .await?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}
