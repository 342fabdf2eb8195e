//! Invitations of an account, for listing (the tokens are never stored anywhere).

use async_trait::async_trait;
use parley_aggregates::invitation::InvitationEvent;
use parley_eventstore::RecordedEvent;
use sqlx::PgConnection;

use super::decode;
use crate::error::ProjectionError;
use crate::projection::{Decisions, Projection};
use crate::reads::ReadModel;

pub mod query;

pub struct InvitationsProjection;

#[async_trait]
impl Projection for InvitationsProjection {
    fn name(&self) -> &'static str {
        ReadModel::Invitations.name()
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["invitations"]
    }

    fn schema(&self) -> &'static str {
        r#"
        CREATE TABLE invitations (
            id          uuid PRIMARY KEY,
            account_id  uuid NOT NULL,
            email       text NOT NULL,
            role        text NOT NULL,
            invited_by  uuid NOT NULL,
            status      text NOT NULL,
            expires_at  timestamptz NOT NULL,
            created_at  timestamptz NOT NULL,
            updated_at  timestamptz NOT NULL,
            version     bigint NOT NULL
        );
        CREATE INDEX invitations_account_idx ON invitations (account_id, created_at DESC);
        "#
    }

    /// The account's listing is a query's; a batch finds an invitation by id.
    fn deferred_indexes(&self) -> &'static [&'static str] {
        &["invitations_account_idx"]
    }

    fn decides(&self) -> Decisions {
        Decisions {
            handles: &["InvitationCreated", "InvitationAccepted", "InvitationRevoked"],
            ignores: &[
                "AccountOpened",
                "OwnerAdded",
                "OwnerRemoved",
                "UserRegistered",
                "UserDeactivated",
                "UserRolesChanged",
                "UserProfileUpdated",
                "PasswordChanged",
                "SessionStarted",
                "RefreshTokenRotated",
                "SessionEnded",
                "ConversationStarted",
                "ConversationUpdated",
                "ConversationArchived",
                "MemberAdded",
                "MemberRemoved",
                "MessagePosted",
                "MessageEdited",
                "MessageDeleted",
                "ReactionAdded",
                "ReactionRemoved",
                "MessagesRead",
                "RoleCreated",
                "RoleUpdated",
                "RoleDeleted",
                "ApiKeyCreated",
                "ApiKeyRevoked",
                "ApiKeyUsed",
                "NotificationRead",
                "NotificationsReadAll",
            ],
            ignores_streams: &[
                "WebhookSubscription",
                "IncomingWebhook",
                "Call",
                "AnalyticsDay",
                "Space",
                "Experience",
                "Stream",
                "AccessGrant",
            ],
        }
    }

    async fn apply(&self, conn: &mut PgConnection, events: &[&RecordedEvent]) -> Result<(), ProjectionError> {
        for e in events {
            match decode::<InvitationEvent>(e)? {
                InvitationEvent::InvitationCreated {
                    invitation_id,
                    account_id,
                    email,
                    role,
                    invited_by,
                    expires_at,
                    ..
                } => {
                    sqlx::query(
                        "INSERT INTO invitations (id, account_id, email, role, invited_by, status, expires_at, \
                           created_at, updated_at, version) \
                         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $7, $8) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(invitation_id)
                    .bind(account_id)
                    .bind(email)
                    .bind(role)
                    .bind(invited_by)
                    .bind(expires_at)
                    .bind(e.recorded_at)
                    .bind(e.version)
                    .execute(&mut *conn)
                    .await?;
                }
                InvitationEvent::InvitationAccepted { invitation_id, .. } => {
                    set_status(conn, invitation_id, "accepted", e).await?;
                }
                InvitationEvent::InvitationRevoked { invitation_id, .. } => {
                    set_status(conn, invitation_id, "revoked", e).await?;
                }
            }
        }
        Ok(())
    }
}

async fn set_status(
    conn: &mut PgConnection,
    id: uuid::Uuid,
    status: &str,
    e: &RecordedEvent,
) -> Result<(), ProjectionError> {
    sqlx::query("UPDATE invitations SET status = $2, updated_at = $3, version = $4 WHERE id = $1")
        .bind(id)
        .bind(status)
        .bind(e.recorded_at)
        .bind(e.version)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
