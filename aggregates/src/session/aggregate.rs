use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{SessionCommand, SessionEvent};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("the session has already started")]
    AlreadyStarted,
    #[error("the session is not active")]
    NotActive,
}

impl Aggregate for Session {
    const TYPE: &'static str = "Session";
    type Command = SessionCommand;
    type Event = SessionEvent;
    type Error = SessionError;
    type Services = ();

    async fn handle(
        &mut self,
        command: SessionCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), SessionError> {
        match command {
            SessionCommand::Start { session_id, user_id, account_id, refresh_token_hash, expires_at } => {
                if self.id.is_some() {
                    return Err(SessionError::AlreadyStarted);
                }
                let e = SessionEvent::SessionStarted {
                    session_id,
                    user_id,
                    account_id,
                    refresh_token_hash,
                    expires_at,
                };
                sink.write(e, self).await;
            }
            SessionCommand::End { reason } => {
                let (Some(session_id), Some(user_id), true) = (self.id, self.user_id, self.active) else {
                    return Err(SessionError::NotActive);
                };
                sink.write(SessionEvent::SessionEnded { session_id, user_id, reason }, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::SessionStarted { session_id, user_id, .. } => {
                self.id = Some(session_id);
                self.user_id = Some(user_id);
                self.active = true;
            }
            SessionEvent::SessionEnded { .. } => self.active = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use cqrs_es::test::TestFramework;

    use super::*;

    fn started(id: Uuid) -> SessionEvent {
        SessionEvent::SessionStarted {
            session_id: id,
            user_id: Uuid::nil(),
            account_id: Uuid::nil(),
            refresh_token_hash: "h".into(),
            expires_at: Utc.timestamp_opt(2_000_000_000, 0).unwrap(),
        }
    }

    #[test]
    fn an_active_session_ends_once() {
        let id = Uuid::now_v7();
        TestFramework::<Session>::with(())
            .given(vec![started(id)])
            .when(SessionCommand::End { reason: "logout".into() })
            .then_expect_events(vec![SessionEvent::SessionEnded {
                session_id: id,
                user_id: Uuid::nil(),
                reason: "logout".into(),
            }]);
        TestFramework::<Session>::with(())
            .given(vec![
                started(id),
                SessionEvent::SessionEnded { session_id: id, user_id: Uuid::nil(), reason: "x".into() },
            ])
            .when(SessionCommand::End { reason: "logout".into() })
            .then_expect_error(SessionError::NotActive);
    }

    #[test]
    fn a_session_that_never_started_cannot_end() {
        TestFramework::<Session>::with(())
            .given_no_previous_events()
            .when(SessionCommand::End { reason: "logout".into() })
            .then_expect_error(SessionError::NotActive);
    }

    #[test]
    fn stored_names_are_stable() {
        let id = Uuid::nil();
        crate::payload::assert_stored_names(&[
            started(id),
            SessionEvent::SessionEnded { session_id: id, user_id: id, reason: "r".into() },
        ]);
    }
}
