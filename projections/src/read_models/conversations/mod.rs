//! Conversations and their members, for lists and membership checks on reads.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parley_aggregates::conversation::{ConversationEvent, MemberRole};
use parley_eventstore::RecordedEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use super::decode;
use crate::error::ProjectionError;
use crate::projection::{Decisions, Projection};
use crate::reads::ReadModel;

pub mod query;

pub struct ConversationsProjection;

/// Message activity of one conversation within a batch, written once per batch.
struct Activity {
    count: i64,
    last_at: DateTime<Utc>,
    last_message_id: Uuid,
}

#[async_trait]
impl Projection for ConversationsProjection {
    fn name(&self) -> &'static str {
        ReadModel::Conversations.name()
    }

    fn version(&self) -> i32 {
        3
    }

    fn tables(&self) -> &'static [&'static str] {
        &["conversations", "conversation_members"]
    }

    fn schema(&self) -> &'static str {
        r#"
        CREATE TABLE conversations (
            id               uuid PRIMARY KEY,
            account_id       uuid NOT NULL,
            kind             text NOT NULL,
            title            text,
            topic            text,
            created_by       uuid NOT NULL,
            created_at       timestamptz NOT NULL,
            updated_at       timestamptz NOT NULL,
            last_activity_at timestamptz NOT NULL,
            last_message_id  uuid,
            message_count    bigint NOT NULL DEFAULT 0,
            archived         boolean NOT NULL DEFAULT false,
            version          bigint NOT NULL
        ) WITH (fillfactor = 70);
        -- No index covers the columns every post changes (activity, counts): their updates stay
        -- HOT, so a busy conversation's row does not leave a trail of dead index entries behind
        -- (each batch rewrites it), with or without autovacuum. Lists come per member and sort
        -- the member's conversations.
        CREATE INDEX conversations_account_idx ON conversations (account_id);
        CREATE TABLE conversation_members (
            conversation_id uuid NOT NULL,
            user_id         uuid NOT NULL,
            account_id      uuid NOT NULL,
            role            text NOT NULL,
            joined_at       timestamptz NOT NULL,
            PRIMARY KEY (conversation_id, user_id)
        );
        CREATE INDEX conversation_members_user_idx ON conversation_members (user_id);
        "#
    }

    /// Listings by account and by member are queries'; a batch finds rows by their keys.
    fn deferred_indexes(&self) -> &'static [&'static str] {
        &["conversations_account_idx", "conversation_members_user_idx"]
    }

    fn decides(&self) -> Decisions {
        Decisions {
            handles: &[
                "ConversationStarted",
                "ConversationUpdated",
                "ConversationArchived",
                "MemberAdded",
                "MemberRemoved",
                "MessagePosted",
            ],
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
        let mut activity: HashMap<Uuid, Activity> = HashMap::new();
        for e in events {
            match decode::<ConversationEvent>(e)? {
                ConversationEvent::ConversationStarted {
                    conversation_id,
                    kind,
                    title,
                    topic,
                    created_by,
                } => {
                    sqlx::query(
                        "INSERT INTO conversations (id, account_id, kind, title, topic, created_by, created_at, \
                           updated_at, last_activity_at, version) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7, 1) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(conversation_id)
                    .bind(e.account_id)
                    .bind(kind)
                    .bind(title)
                    .bind(topic)
                    .bind(created_by)
                    .bind(e.recorded_at)
                    .execute(&mut *conn)
                    .await?;
                }
                ConversationEvent::MemberAdded { conversation_id, user_id, role, .. } => {
                    let role = match role {
                        MemberRole::Admin => "admin",
                        MemberRole::Member => "member",
                    };
                    sqlx::query(
                        "INSERT INTO conversation_members (conversation_id, user_id, account_id, role, joined_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (conversation_id, user_id) DO UPDATE SET role = $4",
                    )
                    .bind(conversation_id)
                    .bind(user_id)
                    .bind(e.account_id)
                    .bind(role)
                    .bind(e.recorded_at)
                    .execute(&mut *conn)
                    .await?;
                }
                ConversationEvent::ConversationUpdated { conversation_id, title, topic, .. } => {
                    sqlx::query(
                        "UPDATE conversations SET title = $2, topic = $3, updated_at = $4, version = version + 1 \
                         WHERE id = $1",
                    )
                    .bind(conversation_id)
                    .bind(title)
                    .bind(topic)
                    .bind(e.recorded_at)
                    .execute(&mut *conn)
                    .await?;
                }
                ConversationEvent::ConversationArchived { conversation_id, .. } => {
                    sqlx::query("UPDATE conversations SET archived = true, updated_at = $2 WHERE id = $1")
                        .bind(conversation_id)
                        .bind(e.recorded_at)
                        .execute(&mut *conn)
                        .await?;
                }
                ConversationEvent::MemberRemoved { conversation_id, user_id, .. } => {
                    sqlx::query(
                        "DELETE FROM conversation_members WHERE conversation_id = $1 AND user_id = $2",
                    )
                    .bind(conversation_id)
                    .bind(user_id)
                    .execute(&mut *conn)
                    .await?;
                }
                ConversationEvent::MessagePosted { message_id, conversation_id, .. } => {
                    let a = activity.entry(conversation_id).or_insert(Activity {
                        count: 0,
                        last_at: e.recorded_at,
                        last_message_id: message_id,
                    });
                    a.count += 1;
                    a.last_at = e.recorded_at;
                    a.last_message_id = message_id;
                }
                _ => {}
            }
        }
        if !activity.is_empty() {
            // One statement for every conversation the batch touched.
            let mut ids = Vec::with_capacity(activity.len());
            let mut counts = Vec::with_capacity(activity.len());
            let mut lasts_at = Vec::with_capacity(activity.len());
            let mut last_ids = Vec::with_capacity(activity.len());
            for (id, a) in activity {
                ids.push(id);
                counts.push(a.count);
                lasts_at.push(a.last_at);
                last_ids.push(a.last_message_id);
            }
            sqlx::query(
                "UPDATE conversations c SET message_count = c.message_count + v.n, \
                   last_activity_at = greatest(c.last_activity_at, v.at), last_message_id = v.last \
                 FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[], $4::uuid[]) AS v(id, n, at, last) \
                 WHERE c.id = v.id",
            )
            .bind(ids)
            .bind(counts)
            .bind(lasts_at)
            .bind(last_ids)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}
