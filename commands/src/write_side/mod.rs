//! What each aggregate needs written beside its events, in the same transaction: uniqueness
//! claims and write-side index rows. Derived from the new events alone, so `handle` stays pure.

use std::future::Future;

use cqrs_es::Aggregate;
use parley_aggregates::account::Account;
use parley_aggregates::api_key::{ApiKey, ApiKeyCommand, ApiKeyEvent};
use parley_aggregates::creator::{AccessGrantEvent, GrantSource, SpaceEvent, StreamEvent};
use parley_aggregates::invitation::{Invitation, InvitationCommand, InvitationEvent};
use parley_aggregates::role::{Role, RoleEvent};
use parley_aggregates::session::{Session, SessionCommand, SessionEvent};
use parley_aggregates::user::{User, UserCommand, UserEvent};
use parley_aggregates::DomainError;
use parley_eventstore::claims::{self, ClaimOutcome};
use parley_eventstore::StreamKey;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::DispatchError;

mod call;
mod conversation;

pub use conversation::{direct_pair_key, DIRECT_PAIR_CLAIM};

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

    /// Whether `command` starts its stream (the aggregate's id is new: a conversation, a session,
    /// a call). Such a command is first decided on the empty state at version 0 without reading
    /// the stream; the append checks under the stream's lock that it is still empty, and when it
    /// is not, the command is decided again on what the stream holds, like any stale decision.
    fn creates_stream(_command: &Self::Command) -> bool {
        false
    }

    /// Whether `events` need rows of [`WriteSide::write_side`]. When they need none, a command
    /// decided on state the dispatcher already holds is appended in one autocommit statement
    /// instead of a transaction. True, the safe answer, unless the aggregate says otherwise.
    fn writes_rows(_events: &[Self::Event]) -> bool {
        true
    }

    /// The unique write-side rows `events` would write, change or delete (a user's reaction with
    /// an emoji to a message, a reaction's removal, a message's edit or deletion): of two commands in a group commit that would write the same, the second runs
    /// alone, once the first committed, and decides on what it finds.
    fn unique_rows(_events: &[Self::Event]) -> Vec<String> {
        Vec::new()
    }

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

/// Aggregates whose events need no write-side rows.
macro_rules! without_write_side {
    ($($aggregate:ty),* $(,)?) => {$(
        impl WriteSide for $aggregate {
            fn writes_rows(_events: &[Self::Event]) -> bool {
                false
            }
        }
    )*};
}

without_write_side!(
    Account,
    parley_aggregates::inbox::Inbox,
    parley_aggregates::analytics::AnalyticsDay,
    parley_aggregates::creator::Experience,
    parley_aggregates::webhook::WebhookSubscription,
    parley_aggregates::webhook::IncomingWebhook,
);

impl WriteSide for Session {
    fn creates_stream(command: &SessionCommand) -> bool {
        matches!(command, SessionCommand::Start { .. })
    }

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
    fn creates_stream(command: &UserCommand) -> bool {
        matches!(command, UserCommand::Register { .. })
    }

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
    fn creates_stream(command: &InvitationCommand) -> bool {
        matches!(command, InvitationCommand::Create { .. })
    }

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

    fn creates_stream(command: &ApiKeyCommand) -> bool {
        matches!(command, ApiKeyCommand::Create { .. })
    }

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
