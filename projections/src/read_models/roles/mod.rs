//! Custom roles of an account, for listing. Deleted roles are removed.

use async_trait::async_trait;
use parley_aggregates::role::RoleEvent;
use parley_eventstore::RecordedEvent;
use sqlx::PgConnection;

use super::decode;
use crate::error::ProjectionError;
use crate::projection::{Decisions, Projection};
use crate::reads::ReadModel;

pub mod query;

pub struct RolesProjection;

#[async_trait]
impl Projection for RolesProjection {
    fn name(&self) -> &'static str {
        ReadModel::Roles.name()
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["roles"]
    }

    fn schema(&self) -> &'static str {
        r#"
        CREATE TABLE roles (
            id          uuid PRIMARY KEY,
            account_id  uuid NOT NULL,
            name        text NOT NULL,
            permissions text[] NOT NULL,
            created_at  timestamptz NOT NULL,
            updated_at  timestamptz NOT NULL,
            version     bigint NOT NULL
        );
        CREATE INDEX roles_account_idx ON roles (account_id, lower(name));
        "#
    }

    /// The account's listing is a query's; a batch finds a role by id.
    fn deferred_indexes(&self) -> &'static [&'static str] {
        &["roles_account_idx"]
    }

    fn decides(&self) -> Decisions {
        Decisions {
            handles: &["RoleCreated", "RoleUpdated", "RoleDeleted"],
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
                "InvitationCreated",
                "InvitationAccepted",
                "InvitationRevoked",
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
            match decode::<RoleEvent>(e)? {
                RoleEvent::RoleCreated { role_id, account_id, name, permissions, .. }
                | RoleEvent::RoleUpdated { role_id, account_id, name, permissions, .. } => {
                    let permissions: Vec<&str> = permissions.iter().map(|p| p.name()).collect();
                    sqlx::query(
                        "INSERT INTO roles (id, account_id, name, permissions, created_at, updated_at, version) \
                         VALUES ($1, $2, $3, $4, $5, $5, $6) \
                         ON CONFLICT (id) DO UPDATE SET name = $3, permissions = $4, updated_at = $5, version = $6",
                    )
                    .bind(role_id)
                    .bind(account_id)
                    .bind(name)
                    .bind(&permissions)
                    .bind(e.recorded_at)
                    .bind(e.version)
                    .execute(&mut *conn)
                    .await?;
                }
                RoleEvent::RoleDeleted { role_id, .. } => {
                    sqlx::query("DELETE FROM roles WHERE id = $1").bind(role_id).execute(&mut *conn).await?;
                }
            }
        }
        Ok(())
    }
}
