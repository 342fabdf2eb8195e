//! The notifications a user reads.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::reads::{ReadModel, Reads};

const READS: &[ReadModel] = &[ReadModel::Notifications];

/// A notification, as every answer shows it.
#[derive(utoipa::ToSchema, Clone, Debug, Serialize, sqlx::FromRow)]
pub struct NotificationView {
    pub id: Uuid,
    /// `mention` or `added_to_conversation`.
    pub kind: String,
    pub conversation_id: Uuid,
    pub message_id: Option<Uuid>,
    pub actor_id: Uuid,
    pub created_at: DateTime<Utc>,
    /// The log cursor of the event that caused it.
    pub position: String,
    pub read_at: Option<DateTime<Utc>>,
}

/// A page of a user's notifications, newest first.
#[derive(Clone, Debug)]
pub struct NotificationPage {
    pub items: Vec<NotificationView>,
    /// How many the filter matches.
    pub total: i64,
    /// How many are unread, whatever the filter.
    pub unread: i64,
}

/// `user`'s notifications (only unread ones with `unread_only`), `limit` from `offset`.
pub async fn page(
    reads: &Reads<'_>,
    user_id: Uuid,
    unread_only: bool,
    limit: i64,
    offset: i64,
) -> Result<NotificationPage, ProjectionError> {
    let pool = reads.of(READS).await?;
    let (total, unread): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE NOT $2 OR read_at IS NULL), count(*) FILTER (WHERE read_at IS NULL) \
         FROM notifications WHERE user_id = $1",
    )
    .bind(user_id)
    .bind(unread_only)
    .fetch_one(pool)
    .await?;
    let items = sqlx::query_as(
        "SELECT id, kind, conversation_id, message_id, actor_id, created_at, position, read_at FROM notifications \
         WHERE user_id = $1 AND (NOT $2 OR read_at IS NULL) ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4",
    )
    .bind(user_id)
    .bind(unread_only)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    Ok(NotificationPage { items, total, unread })
}

/// Whether `user` has the notification, and whether it is read: `None` when it is not theirs.
pub async fn is_read(
    reads: &Reads<'_>,
    user_id: Uuid,
    notification_id: Uuid,
) -> Result<Option<bool>, ProjectionError> {
    let pool = reads.of(READS).await?;
    let found: Option<(bool,)> =
        sqlx::query_as("SELECT read_at IS NOT NULL FROM notifications WHERE id = $1 AND user_id = $2")
            .bind(notification_id)
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
    Ok(found.map(|(read,)| read))
}

/// The notification the event `event_id` gave `user_id`, if it gave them one.
pub async fn of_event(
    reads: &Reads<'_>,
    user_id: Uuid,
    event_id: Uuid,
) -> Result<Option<NotificationView>, ProjectionError> {
    let pool = reads.of(READS).await?;
    Ok(sqlx::query_as(
        "SELECT id, kind, conversation_id, message_id, actor_id, created_at, position, read_at FROM notifications \
         WHERE id = $1 AND user_id = $2",
    )
    .bind(super::notification_id(event_id, user_id))
    .bind(user_id)
    .fetch_optional(pool)
    .await?)
}
