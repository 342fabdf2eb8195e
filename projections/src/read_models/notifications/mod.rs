//! Each user's notifications: being mentioned in a message, being added to a conversation. A
//! notification's id is derived from the event that caused it and its user, so a rebuild gives
//! every notification the id clients already know.

use async_trait::async_trait;
use parley_aggregates::call::CallEvent;
use parley_aggregates::conversation::ConversationEvent;
use parley_aggregates::inbox::InboxEvent;
use parley_eventstore::RecordedEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use super::decode;
use crate::error::ProjectionError;
use crate::projection::{Decisions, Projection};
use crate::reads::ReadModel;

pub mod query;

pub struct NotificationsProjection;

pub const MENTION: &str = "mention";
pub const ADDED_TO_CONVERSATION: &str = "added_to_conversation";
pub const MISSED_CALL: &str = "missed_call";

/// The notification `event` gives `user`: the same on every rebuild.
pub fn notification_id(event_id: Uuid, user_id: Uuid) -> Uuid {
    Uuid::from_u128(event_id.as_u128() ^ user_id.as_u128().rotate_left(64))
}

#[async_trait]
impl Projection for NotificationsProjection {
    fn name(&self) -> &'static str {
        ReadModel::Notifications.name()
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["notifications"]
    }

    fn schema(&self) -> &'static str {
        r#"
        CREATE TABLE notifications (
            id              uuid PRIMARY KEY,
            account_id      uuid NOT NULL,
            user_id         uuid NOT NULL,
            kind            text NOT NULL,
            conversation_id uuid NOT NULL,
            message_id      uuid,
            actor_id        uuid NOT NULL,
            created_at      timestamptz NOT NULL,
            position        text NOT NULL,
            read_at         timestamptz
        );
        CREATE INDEX notifications_user_idx ON notifications (user_id, created_at DESC, id);
        CREATE INDEX notifications_unread_idx ON notifications (user_id) WHERE read_at IS NULL;
        "#
    }

    /// A user's pages are queries'; marking all read reads the unread index, which stays.
    fn deferred_indexes(&self) -> &'static [&'static str] {
        &["notifications_user_idx"]
    }

    fn decides(&self) -> Decisions {
        Decisions {
            handles: &[
                "MemberAdded",
                "MessagePosted",
                "NotificationRead",
                "NotificationsReadAll",
                "CallMissed",
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
                "MemberRemoved",
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
                "CallStarted",
                "CallRinging",
                "CallAccepted",
                "CallDeclined",
                "CallParticipantLeft",
                "CallEnded",
            ],
            ignores_streams: &[
                "WebhookSubscription",
                "IncomingWebhook",
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
                "NotificationRead" | "NotificationsReadAll" => read(conn, e).await?,
                _ => notify(conn, e).await?,
            }
        }
        Ok(())
    }
}

/// What a conversation event tells whom.
struct Notice {
    kind: &'static str,
    conversation_id: Uuid,
    message_id: Option<Uuid>,
    actor_id: Uuid,
    users: Vec<Uuid>,
}

/// The one rule of who is told: the members a post mentions; a member added by someone else
/// (those who start a conversation or join on their own are not told about it).
fn told(mentions: Option<&[Uuid]>, added: Option<(Uuid, Uuid)>) -> Vec<Uuid> {
    match (mentions, added) {
        (Some(mentions), _) => mentions.to_vec(),
        (None, Some((user_id, added_by))) if user_id != added_by => vec![user_id],
        _ => Vec::new(),
    }
}

/// The notice a conversation event gives, if any.
fn notice(event: ConversationEvent) -> Option<Notice> {
    let (kind, conversation_id, message_id, actor_id, users) = match event {
        ConversationEvent::MessagePosted { message_id, conversation_id, author_id, mentions, .. } => {
            (MENTION, conversation_id, Some(message_id), author_id, told(Some(&mentions), None))
        }
        ConversationEvent::MemberAdded { conversation_id, user_id, added_by, .. } => {
            (ADDED_TO_CONVERSATION, conversation_id, None, added_by, told(None, Some((user_id, added_by))))
        }
        _ => return None,
    };
    (!users.is_empty()).then_some(Notice { kind, conversation_id, message_id, actor_id, users })
}

/// The fields of an event that say whom it concerns, read in place (a post's body is not copied:
/// the cable asks this of every event for every `user` channel of the account).
#[derive(serde::Deserialize)]
struct Addressed {
    #[serde(default)]
    mentions: Vec<Uuid>,
    user_id: Option<Uuid>,
    added_by: Option<Uuid>,
    initiator_id: Option<Uuid>,
    #[serde(default)]
    callee_ids: Vec<Uuid>,
}

/// Whether an event of this type can give anyone a notification (a mention, being added to a
/// conversation, a missed call).
pub fn may_notify(event_type: &str) -> bool {
    matches!(event_type, "MessagePosted" | "MemberAdded" | "CallMissed")
}

/// Whether `e` is news for `user`'s own channel (the cable's `user` channel): it notifies them,
/// or marks their notifications read (on another device).
pub fn concerns(e: &RecordedEvent, user: Uuid) -> bool {
    use serde::Deserialize;
    let Ok(a) = Addressed::deserialize(&e.payload) else { return false };
    match e.event_type.as_str() {
        "MessagePosted" => told(Some(&a.mentions), None).contains(&user),
        "MemberAdded" => {
            a.user_id.zip(a.added_by).is_some_and(|added| told(None, Some(added)).contains(&user))
        }
        "NotificationRead" | "NotificationsReadAll" => a.user_id == Some(user),
        // A call rings its callees and tells them it was missed; its outcome reaches everyone in it.
        "CallRinging" | "CallMissed" => a.callee_ids.contains(&user),
        "CallAccepted" | "CallDeclined" | "CallParticipantLeft" | "CallEnded" => {
            a.initiator_id == Some(user) || a.user_id == Some(user) || a.callee_ids.contains(&user)
        }
        _ => false,
    }
}

/// The notice a call event gives: each callee who never answered a missed call is told.
fn call_notice(event: CallEvent) -> Option<Notice> {
    match event {
        CallEvent::CallMissed { conversation_id, initiator_id, callee_ids, .. } if !callee_ids.is_empty() => {
            Some(Notice {
                kind: MISSED_CALL,
                conversation_id,
                message_id: None,
                actor_id: initiator_id,
                users: callee_ids,
            })
        }
        _ => None,
    }
}

/// The notifications a conversation or call event gives.
async fn notify(conn: &mut PgConnection, e: &RecordedEvent) -> Result<(), ProjectionError> {
    let notice = match e.stream_type.as_str() {
        "Call" => call_notice(decode(e)?),
        _ => notice(decode(e)?),
    };
    let Some(Notice { kind, conversation_id, message_id, actor_id, users }) = notice else {
        return Ok(());
    };
    let ids: Vec<Uuid> = users.iter().map(|u| notification_id(e.event_id, *u)).collect();
    sqlx::query(
        "INSERT INTO notifications (id, account_id, user_id, kind, conversation_id, message_id, actor_id, \
           created_at, position) \
         SELECT n.id, $3, n.user_id, $4, $5, $6, $7, $8, $9 FROM unnest($1::uuid[], $2::uuid[]) AS n(id, user_id) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&users)
    .bind(e.account_id)
    .bind(kind)
    .bind(conversation_id)
    .bind(message_id)
    .bind(actor_id)
    .bind(e.recorded_at)
    .bind(e.cursor().to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A user marked one notification, or all they had, read.
async fn read(conn: &mut PgConnection, e: &RecordedEvent) -> Result<(), ProjectionError> {
    match decode::<InboxEvent>(e)? {
        InboxEvent::NotificationRead { user_id, notification_id } => {
            sqlx::query(
                "UPDATE notifications SET read_at = $3 WHERE id = $1 AND user_id = $2 AND read_at IS NULL",
            )
            .bind(notification_id)
            .bind(user_id)
            .bind(e.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        // Every notification so far is from an earlier event: all of them, on a rebuild too.
        InboxEvent::NotificationsReadAll { user_id } => {
            sqlx::query("UPDATE notifications SET read_at = $2 WHERE user_id = $1 AND read_at IS NULL")
                .bind(user_id)
                .bind(e.recorded_at)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}
