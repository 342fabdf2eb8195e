//! What each aggregate needs written beside its events, in the same transaction: uniqueness
//! claims and write-side index rows. Derived from the new events alone, so `handle` stays pure.

use std::future::Future;

use cqrs_es::Aggregate;
use parley_aggregates::account::Account;
use parley_aggregates::conversation::{Conversation, ConversationEvent};
use parley_aggregates::invitation::{Invitation, InvitationEvent};
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
}

impl WriteSide for Account {}

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

impl WriteSide for Conversation {
    /// A conversation may hold 100,000 messages: load from a snapshot plus at most this many events.
    const SNAPSHOT_EVERY: i64 = 100;

    async fn write_side(
        conn: &mut PgConnection,
        account_id: Uuid,
        _stream: &StreamKey,
        events: &[ConversationEvent],
    ) -> Result<(), DispatchError> {
        for event in events {
            if let ConversationEvent::MessagePosted { message_id, conversation_id, author_id, .. } = event {
                sqlx::query(
                    "INSERT INTO message_facts (conversation_id, message_id, account_id, author_id) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(conversation_id)
                .bind(message_id)
                .bind(account_id)
                .bind(author_id)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }
}
