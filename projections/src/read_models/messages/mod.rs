//! Messages, partitioned by month (as the source chat app does), for cursor pagination within
//! a conversation, with their reactions and each member's read state. `seq` is the conversation stream's version of the `MessagePosted` event:
//! increasing within a conversation, in the order messages were accepted.

use async_trait::async_trait;
use parley_aggregates::conversation::ConversationEvent;
use parley_eventstore::RecordedEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use super::decode;
use crate::error::ProjectionError;
use crate::projection::{Decisions, Projection};
use crate::reads::ReadModel;

mod posts;
pub mod query;

use posts::{Rows, Write};

pub struct MessagesProjection;

#[async_trait]
impl Projection for MessagesProjection {
    fn name(&self) -> &'static str {
        ReadModel::Messages.name()
    }

    fn version(&self) -> i32 {
        4
    }

    fn tables(&self) -> &'static [&'static str] {
        &["messages", "reactions", "read_states"]
    }

    fn schema(&self) -> &'static str {
        r#"
        CREATE TABLE messages (
            id              uuid NOT NULL,
            account_id      uuid NOT NULL,
            conversation_id uuid NOT NULL,
            seq             bigint NOT NULL,
            author_id       uuid NOT NULL,
            body            text,
            mentions        uuid[] NOT NULL DEFAULT '{}',
            created_at      timestamptz NOT NULL,
            edited_at       timestamptz,
            deleted         boolean NOT NULL DEFAULT false,
            version         int NOT NULL DEFAULT 1,
            PRIMARY KEY (id, created_at)
        ) PARTITION BY RANGE (created_at);
        -- Pages of a conversation, both directions; unread counts.
        CREATE INDEX messages_conversation_seq_idx ON messages (conversation_id, seq);
        CREATE TABLE reactions (
            id              uuid PRIMARY KEY,
            message_id      uuid NOT NULL,
            conversation_id uuid NOT NULL,
            user_id         uuid NOT NULL,
            emoji           text NOT NULL,
            created_at      timestamptz NOT NULL
        );
        CREATE INDEX reactions_message_idx ON reactions (message_id, created_at);
        -- Each member's read marker (the seq read up to) and the others' messages after it. Every
        -- post updates it: no index covers what changes, and pages keep room, so updates stay HOT.
        CREATE TABLE read_states (
            conversation_id uuid NOT NULL,
            user_id         uuid NOT NULL,
            account_id      uuid NOT NULL,
            last_read_seq   bigint NOT NULL,
            unread_count    bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (conversation_id, user_id)
        ) WITH (fillfactor = 70);
        CREATE INDEX read_states_user_idx ON read_states (user_id);
        "#
    }

    /// Pages of reactions and a user's read states are queries' only; a batch reads messages by
    /// conversation and seq (a new member's marker, a read mark's count), so that one stays.
    fn deferred_indexes(&self) -> &'static [&'static str] {
        &["reactions_message_idx", "read_states_user_idx"]
    }

    fn decides(&self) -> Decisions {
        Decisions {
            handles: &[
                "MemberAdded",
                "MemberRemoved",
                "MessagePosted",
                "MessageEdited",
                "MessageDeleted",
                "ReactionAdded",
                "ReactionRemoved",
                "MessagesRead",
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
                "ConversationStarted",
                "ConversationUpdated",
                "ConversationArchived",
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
        apply(conn, events, Write::Insert).await
    }

    async fn fill(&self, conn: &mut PgConnection, events: &[&RecordedEvent]) -> Result<(), ProjectionError> {
        apply(conn, events, Write::Copy).await
    }
}

/// Posts are gathered into one write; any other event first writes the posts before it, so
/// every event applies in log order.
async fn apply(
    conn: &mut PgConnection,
    events: &[&RecordedEvent],
    write: Write,
) -> Result<(), ProjectionError> {
    let mut rows = Rows::default();
    for e in events {
        let event = decode::<ConversationEvent>(e)?;
        if let ConversationEvent::MessagePosted { message_id, conversation_id, author_id, body, mentions } =
            event
        {
            rows.push(e, message_id, conversation_id, author_id, body, &mentions);
            continue;
        }
        rows.flush(conn, write).await?;
        apply_one(conn, e, event).await?;
    }
    rows.flush(conn, write).await
}

/// One event other than a post.
async fn apply_one(
    conn: &mut PgConnection,
    e: &RecordedEvent,
    event: ConversationEvent,
) -> Result<(), ProjectionError> {
    match event {
        ConversationEvent::MessageEdited { message_id, body, version, .. } => {
            sqlx::query("UPDATE messages SET body = $2, edited_at = $3, version = $4 WHERE id = $1")
                .bind(message_id)
                .bind(body)
                .bind(e.recorded_at)
                .bind(version)
                .execute(&mut *conn)
                .await?;
        }
        ConversationEvent::MessageDeleted { message_id, version, .. } => {
            // The body leaves the read model (the log keeps it for the audit); unread counts of
            // those who had not read it drop.
            let deleted: Option<(Uuid, i64, Uuid)> = sqlx::query_as(
                "UPDATE messages SET deleted = true, body = NULL, version = $2 WHERE id = $1 AND NOT deleted \
                 RETURNING conversation_id, seq, author_id",
            )
            .bind(message_id)
            .bind(version)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some((conversation_id, seq, author_id)) = deleted {
                sqlx::query(
                    "UPDATE read_states SET unread_count = unread_count - 1 \
                     WHERE conversation_id = $1 AND user_id <> $2 AND last_read_seq < $3 AND unread_count > 0",
                )
                .bind(conversation_id)
                .bind(author_id)
                .bind(seq)
                .execute(&mut *conn)
                .await?;
            }
        }
        ConversationEvent::ReactionAdded { reaction_id, message_id, conversation_id, user_id, emoji } => {
            sqlx::query(
                "INSERT INTO reactions (id, message_id, conversation_id, user_id, emoji, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
            )
            .bind(reaction_id)
            .bind(message_id)
            .bind(conversation_id)
            .bind(user_id)
            .bind(emoji)
            .bind(e.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        ConversationEvent::ReactionRemoved { reaction_id, .. } => {
            sqlx::query("DELETE FROM reactions WHERE id = $1").bind(reaction_id).execute(&mut *conn).await?;
        }
        // A new member has read the history they join: only what comes after is unread.
        ConversationEvent::MemberAdded { conversation_id, user_id, .. } => {
            sqlx::query(
                "INSERT INTO read_states (conversation_id, user_id, account_id, last_read_seq) \
                 SELECT $1, $2, $3, coalesce(max(seq), 0) FROM messages WHERE conversation_id = $1 \
                 ON CONFLICT (conversation_id, user_id) DO NOTHING",
            )
            .bind(conversation_id)
            .bind(user_id)
            .bind(e.account_id)
            .execute(&mut *conn)
            .await?;
        }
        ConversationEvent::MemberRemoved { conversation_id, user_id, .. } => {
            sqlx::query("DELETE FROM read_states WHERE conversation_id = $1 AND user_id = $2")
                .bind(conversation_id)
                .bind(user_id)
                .execute(&mut *conn)
                .await?;
        }
        // Read up to a message: the marker moves forward only, and the count is what is left.
        ConversationEvent::MessagesRead { conversation_id, user_id, message_id } => {
            sqlx::query(
                "UPDATE read_states r SET last_read_seq = m.seq, \
                   unread_count = (SELECT count(*) FROM messages x WHERE x.conversation_id = r.conversation_id \
                                   AND x.seq > m.seq AND x.author_id <> r.user_id AND NOT x.deleted) \
                 FROM (SELECT seq FROM messages WHERE id = $3 AND conversation_id = $1) m \
                 WHERE r.conversation_id = $1 AND r.user_id = $2 AND r.last_read_seq < m.seq",
            )
            .bind(conversation_id)
            .bind(user_id)
            .bind(message_id)
            .execute(&mut *conn)
            .await?;
        }
        _ => {}
    }
    Ok(())
}
