//! Marking one's notifications read: events on the user's inbox stream. Which notifications a
//! user has, and whether they are read, is the notifications read model's to say: the edge asks
//! it and calls these only for one that is the caller's and unread.

use parley_aggregates::inbox::{Inbox, InboxCommand};
use uuid::Uuid;

use super::Commands;
use crate::context::CommandContext;
use crate::dispatcher::{Idempotency, Idempotent};
use crate::error::DispatchError;
use crate::unit_of_work::Executed;

/// The idempotency key of an inbox command, with its renderings.
pub type InboxIdempotency<'a> = Idempotency<'a, Executed<Inbox>>;

impl Commands {
    /// Marks one of the caller's notifications read.
    #[tracing::instrument(skip_all)]
    pub async fn mark_notification_read(
        &self,
        ctx: &CommandContext,
        notification_id: Uuid,
        idempotency: Option<&InboxIdempotency<'_>>,
    ) -> Result<Idempotent<Executed<Inbox>>, DispatchError> {
        let user_id = ctx.user_id()?;
        let read = InboxCommand::MarkRead { user_id, notification_id };
        self.dispatcher.execute_with::<Inbox>(ctx, &user_id.to_string(), read, idempotency).await
    }

    /// Marks every notification the caller has so far read.
    #[tracing::instrument(skip_all)]
    pub async fn mark_all_notifications_read(
        &self,
        ctx: &CommandContext,
        idempotency: Option<&InboxIdempotency<'_>>,
    ) -> Result<Idempotent<Executed<Inbox>>, DispatchError> {
        let user_id = ctx.user_id()?;
        let read = InboxCommand::MarkAllRead { user_id };
        self.dispatcher.execute_with::<Inbox>(ctx, &user_id.to_string(), read, idempotency).await
    }
}
