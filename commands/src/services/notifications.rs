//! Marking one's notifications read: events on the user's inbox stream.

use parley_aggregates::inbox::{Inbox, InboxCommand};
use parley_eventstore::LogCursor;
use uuid::Uuid;

use super::Commands;
use crate::context::CommandContext;
use crate::error::DispatchError;

impl Commands {
    /// Marks one of the caller's notifications read. `None` when it already was (nothing
    /// written); not found unless it is the caller's (as the notifications read model has it).
    #[tracing::instrument(skip_all)]
    pub async fn mark_notification_read(
        &self,
        ctx: &CommandContext,
        notification_id: Uuid,
    ) -> Result<Option<LogCursor>, DispatchError> {
        let user_id = ctx.user_id()?;
        let found: Option<(bool,)> =
            sqlx::query_as("SELECT read_at IS NOT NULL FROM notifications WHERE id = $1 AND user_id = $2")
                .bind(notification_id)
                .bind(user_id)
                .fetch_optional(self.dispatcher.store.pool())
                .await?;
        match found {
            None => Err(DispatchError::NotFound("notification")),
            Some((true,)) => Ok(None),
            Some((false,)) => {
                let read = InboxCommand::MarkRead { user_id, notification_id };
                Ok(self.dispatcher.execute::<Inbox>(ctx, &user_id.to_string(), read).await?.cursor)
            }
        }
    }

    /// Marks every notification the caller has so far read.
    #[tracing::instrument(skip_all)]
    pub async fn mark_all_notifications_read(
        &self,
        ctx: &CommandContext,
    ) -> Result<LogCursor, DispatchError> {
        let user_id = ctx.user_id()?;
        let done = self
            .dispatcher
            .execute::<Inbox>(ctx, &user_id.to_string(), InboxCommand::MarkAllRead { user_id })
            .await?;
        Ok(done.cursor.unwrap_or_default())
    }
}
