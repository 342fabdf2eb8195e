//! API keys of an account, for listing: never the secret or its hash; the time each was last
//! used, from the `ApiKeyUsed` events (at most one per key per minute).

use async_trait::async_trait;
use parley_aggregates::api_key::ApiKeyEvent;
use parley_eventstore::RecordedEvent;
use sqlx::PgConnection;

use super::decode;
use crate::error::ProjectionError;
use crate::projection::{Decisions, Projection};
use crate::reads::ReadModel;

pub mod query;

pub struct ApiKeysProjection;

#[async_trait]
impl Projection for ApiKeysProjection {
    fn name(&self) -> &'static str {
        ReadModel::ApiKeys.name()
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["api_keys"]
    }

    fn schema(&self) -> &'static str {
        r#"
        CREATE TABLE api_keys (
            id           uuid PRIMARY KEY,
            account_id   uuid NOT NULL,
            name         text NOT NULL,
            prefix       text NOT NULL,
            permissions  text[] NOT NULL,
            created_by   uuid NOT NULL,
            created_at   timestamptz NOT NULL,
            expires_at   timestamptz,
            revoked_at   timestamptz,
            last_used_at timestamptz,
            version      bigint NOT NULL
        );
        CREATE INDEX api_keys_account_idx ON api_keys (account_id, created_at DESC, id);
        "#
    }

    /// The account's listing is a query's; a batch finds a key by id.
    fn deferred_indexes(&self) -> &'static [&'static str] {
        &["api_keys_account_idx"]
    }

    fn decides(&self) -> Decisions {
        Decisions {
            handles: &["ApiKeyCreated", "ApiKeyRevoked", "ApiKeyUsed"],
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
                "RoleCreated",
                "RoleUpdated",
                "RoleDeleted",
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
            match decode::<ApiKeyEvent>(e)? {
                ApiKeyEvent::ApiKeyCreated {
                    api_key_id,
                    account_id,
                    name,
                    permissions,
                    prefix,
                    expires_at,
                    created_by,
                    ..
                } => {
                    let permissions: Vec<&str> = permissions.iter().map(|p| p.name()).collect();
                    sqlx::query(
                        "INSERT INTO api_keys (id, account_id, name, prefix, permissions, created_by, \
                           created_at, expires_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(api_key_id)
                    .bind(account_id)
                    .bind(name)
                    .bind(prefix)
                    .bind(&permissions)
                    .bind(created_by)
                    .bind(e.recorded_at)
                    .bind(expires_at)
                    .bind(e.version)
                    .execute(&mut *conn)
                    .await?;
                }
                ApiKeyEvent::ApiKeyRevoked { api_key_id, .. } => {
                    sqlx::query("UPDATE api_keys SET revoked_at = $2, version = $3 WHERE id = $1")
                        .bind(api_key_id)
                        .bind(e.recorded_at)
                        .bind(e.version)
                        .execute(&mut *conn)
                        .await?;
                }
                ApiKeyEvent::ApiKeyUsed { api_key_id, at, .. } => {
                    sqlx::query("UPDATE api_keys SET last_used_at = $2, version = $3 WHERE id = $1")
                        .bind(api_key_id)
                        .bind(at)
                        .bind(e.version)
                        .execute(&mut *conn)
                        .await?;
                }
            }
        }
        Ok(())
    }
}
