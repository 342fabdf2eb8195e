//! The `Inbox` aggregate: what a user has done with their notifications (one stream per user,
//! its id the user's). The notifications themselves are a projection of the log (mentions, being
//! added to a conversation); marking them read is a change like any other, so it is an event.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub enum InboxCommand {
    MarkRead {
        user_id: Uuid,
        notification_id: Uuid,
    },
    /// Every notification the user has so far.
    MarkAllRead {
        user_id: Uuid,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InboxEvent {
    #[serde(rename = "NotificationRead")]
    NotificationRead { user_id: Uuid, notification_id: Uuid },
    #[serde(rename = "NotificationsReadAll")]
    NotificationsReadAll { user_id: Uuid },
}

impl crate::catalog::EventTypes for InboxEvent {
    const TYPES: &'static [&'static str] = &["NotificationRead", "NotificationsReadAll"];
}

impl DomainEvent for InboxEvent {
    fn event_type(&self) -> String {
        match self {
            InboxEvent::NotificationRead { .. } => "NotificationRead".into(),
            InboxEvent::NotificationsReadAll { .. } => "NotificationsReadAll".into(),
        }
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboxError {
    #[error("this inbox belongs to another user")]
    NotYours,
}

/// Whose inbox it is; nothing else is needed to decide.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inbox {
    pub user_id: Option<Uuid>,
}

impl Inbox {
    fn check(&self, user_id: Uuid) -> Result<(), InboxError> {
        match self.user_id {
            Some(owner) if owner != user_id => Err(InboxError::NotYours),
            _ => Ok(()),
        }
    }
}

impl Aggregate for Inbox {
    const TYPE: &'static str = "Inbox";
    type Command = InboxCommand;
    type Event = InboxEvent;
    type Error = InboxError;
    type Services = ();

    async fn handle(
        &mut self,
        command: InboxCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), InboxError> {
        let event = match command {
            InboxCommand::MarkRead { user_id, notification_id } => {
                self.check(user_id)?;
                InboxEvent::NotificationRead { user_id, notification_id }
            }
            InboxCommand::MarkAllRead { user_id } => {
                self.check(user_id)?;
                InboxEvent::NotificationsReadAll { user_id }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: InboxEvent) {
        match event {
            InboxEvent::NotificationRead { user_id, .. } | InboxEvent::NotificationsReadAll { user_id } => {
                self.user_id = Some(user_id)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    const ME: Uuid = Uuid::from_u128(1);
    const N: Uuid = Uuid::from_u128(2);

    #[test]
    fn a_user_marks_their_own_notifications_read() {
        TestFramework::<Inbox>::with(())
            .given_no_previous_events()
            .when(InboxCommand::MarkRead { user_id: ME, notification_id: N })
            .then_expect_events(vec![InboxEvent::NotificationRead { user_id: ME, notification_id: N }]);
        TestFramework::<Inbox>::with(())
            .given(vec![InboxEvent::NotificationRead { user_id: ME, notification_id: N }])
            .when(InboxCommand::MarkAllRead { user_id: ME })
            .then_expect_events(vec![InboxEvent::NotificationsReadAll { user_id: ME }]);
    }

    #[test]
    fn nobody_writes_to_another_users_inbox() {
        TestFramework::<Inbox>::with(())
            .given(vec![InboxEvent::NotificationsReadAll { user_id: ME }])
            .when(InboxCommand::MarkAllRead { user_id: N })
            .then_expect_error(InboxError::NotYours);
    }

    #[test]
    fn stored_names_are_the_event_types() {
        crate::payload::assert_stored_names(&[
            InboxEvent::NotificationRead { user_id: ME, notification_id: N },
            InboxEvent::NotificationsReadAll { user_id: ME },
        ]);
    }
}
