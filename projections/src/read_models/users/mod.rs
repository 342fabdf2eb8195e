//! Accounts and their users, for profiles, search and `GET /users/me`.

use async_trait::async_trait;
use parley_aggregates::account::AccountEvent;
use parley_aggregates::user::UserEvent;
use parley_eventstore::RecordedEvent;
use sqlx::PgConnection;

use super::decode;
use crate::error::ProjectionError;
use crate::projection::{Decisions, Projection};
use crate::reads::ReadModel;

pub mod query;

pub struct UsersProjection;

#[async_trait]
impl Projection for UsersProjection {
    fn name(&self) -> &'static str {
        ReadModel::Users.name()
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["accounts", "users"]
    }

    fn schema(&self) -> &'static str {
        r#"
        CREATE TABLE accounts (
            id          uuid PRIMARY KEY,
            name        text NOT NULL,
            owner_id    uuid NOT NULL,
            created_at  timestamptz NOT NULL,
            version     bigint NOT NULL
        );
        CREATE TABLE users (
            id           uuid PRIMARY KEY,
            account_id   uuid NOT NULL,
            name         text NOT NULL,
            email        text NOT NULL,
            display_name text,
            avatar_url   text,
            bio          text,
            roles        text[] NOT NULL,
            active       boolean NOT NULL DEFAULT true,
            created_at   timestamptz NOT NULL,
            updated_at   timestamptz NOT NULL,
            version      bigint NOT NULL
        );
        -- Search on name or email prefix within an account.
        CREATE INDEX users_account_name_idx ON users (account_id, lower(name) text_pattern_ops);
        CREATE INDEX users_account_email_idx ON users (account_id, email text_pattern_ops);
        "#
    }

    /// Searches by name and email are queries'; a batch finds a user by id.
    fn deferred_indexes(&self) -> &'static [&'static str] {
        &["users_account_name_idx", "users_account_email_idx"]
    }

    fn decides(&self) -> Decisions {
        Decisions {
            handles: &[
                "AccountOpened",
                "UserRegistered",
                "UserDeactivated",
                "UserRolesChanged",
                "UserProfileUpdated",
            ],
            ignores: &[
                "OwnerAdded",
                "OwnerRemoved",
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
            match e.event_type.as_str() {
                "AccountOpened" => {
                    let AccountEvent::AccountOpened { account_id, name, owner_id } = decode(e)? else {
                        continue;
                    };
                    sqlx::query(
                        "INSERT INTO accounts (id, name, owner_id, created_at, version) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(account_id)
                    .bind(name)
                    .bind(owner_id)
                    .bind(e.recorded_at)
                    .bind(e.version)
                    .execute(&mut *conn)
                    .await?;
                }
                "UserRegistered" => {
                    let UserEvent::UserRegistered { user_id, account_id, name, email, roles, .. } =
                        decode(e)?
                    else {
                        continue;
                    };
                    sqlx::query(
                        "INSERT INTO users (id, account_id, name, email, roles, created_at, updated_at, version) \
                         VALUES ($1, $2, $3, $4, $5, $6, $6, $7) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(user_id)
                    .bind(account_id)
                    .bind(name)
                    .bind(email)
                    .bind(roles)
                    .bind(e.recorded_at)
                    .bind(e.version)
                    .execute(&mut *conn)
                    .await?;
                }
                "UserRolesChanged" => {
                    let UserEvent::UserRolesChanged { user_id, roles, .. } = decode(e)? else { continue };
                    sqlx::query(
                        "UPDATE users SET roles = $2, updated_at = $3, version = version + 1 WHERE id = $1",
                    )
                    .bind(user_id)
                    .bind(roles)
                    .bind(e.recorded_at)
                    .execute(&mut *conn)
                    .await?;
                }
                "UserProfileUpdated" => {
                    let UserEvent::UserProfileUpdated {
                        user_id, name, display_name, avatar_url, bio, ..
                    } = decode(e)?
                    else {
                        continue;
                    };
                    sqlx::query(
                        "UPDATE users SET name = coalesce($2, name), \
                           display_name = CASE WHEN $3 THEN $4 ELSE display_name END, \
                           avatar_url = CASE WHEN $5 THEN $6 ELSE avatar_url END, \
                           bio = CASE WHEN $7 THEN $8 ELSE bio END, \
                           updated_at = $9, version = version + 1 \
                         WHERE id = $1",
                    )
                    .bind(user_id)
                    .bind(name)
                    .bind(display_name.is_some())
                    .bind(display_name.flatten())
                    .bind(avatar_url.is_some())
                    .bind(avatar_url.flatten())
                    .bind(bio.is_some())
                    .bind(bio.flatten())
                    .bind(e.recorded_at)
                    .execute(&mut *conn)
                    .await?;
                }
                // Nothing shown changes, but the user's version (their ETag) does.
                "PasswordChanged" => {
                    sqlx::query("UPDATE users SET updated_at = $2, version = version + 1 WHERE id = $1")
                        .bind(
                            e.stream_id
                                .parse::<uuid::Uuid>()
                                .map_err(|err| ProjectionError::apply(e, err))?,
                        )
                        .bind(e.recorded_at)
                        .execute(&mut *conn)
                        .await?;
                }
                "UserDeactivated" => {
                    let UserEvent::UserDeactivated { user_id, .. } = decode(e)? else { continue };
                    sqlx::query("UPDATE users SET active = false, updated_at = $2, version = version + 1 WHERE id = $1")
                        .bind(user_id)
                        .bind(e.recorded_at)
                        .execute(&mut *conn)
                        .await?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}
