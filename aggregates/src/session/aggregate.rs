use chrono::{DateTime, Utc};
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
    /// The hash of the one refresh token that may be used next.
    pub refresh_token_hash: String,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("the session has already started")]
    AlreadyStarted,
    #[error("the session is not active")]
    NotActive,
    #[error("the session has expired")]
    Expired,
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
            SessionCommand::Refresh { presented_hash, new_hash, now, expires_at } => {
                let (Some(session_id), Some(user_id), true) = (self.id, self.user_id, self.active) else {
                    return Err(SessionError::NotActive);
                };
                if self.expires_at.is_some_and(|at| at <= now) {
                    return Err(SessionError::Expired);
                }
                let event = if presented_hash == self.refresh_token_hash {
                    SessionEvent::RefreshTokenRotated {
                        session_id,
                        user_id,
                        refresh_token_hash: new_hash,
                        expires_at,
                    }
                } else {
                    // A token of this session that is no longer current was used: whoever holds
                    // it, thief or owner, the session can no longer be trusted.
                    SessionEvent::SessionEnded {
                        session_id,
                        user_id,
                        reason: super::REFRESH_TOKEN_REUSED.into(),
                    }
                };
                sink.write(event, self).await;
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
            SessionEvent::SessionStarted { session_id, user_id, refresh_token_hash, expires_at, .. } => {
                self.id = Some(session_id);
                self.user_id = Some(user_id);
                self.active = true;
                self.refresh_token_hash = refresh_token_hash;
                self.expires_at = Some(expires_at);
            }
            SessionEvent::RefreshTokenRotated { refresh_token_hash, expires_at, .. } => {
                self.refresh_token_hash = refresh_token_hash;
                self.expires_at = Some(expires_at);
            }
            SessionEvent::SessionEnded { .. } => self.active = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use cqrs_es::test::TestFramework;

    use super::super::REFRESH_TOKEN_REUSED;

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

    fn t(secs: i64) -> chrono::DateTime<Utc> {
        Utc.timestamp_opt(1_900_000_000 + secs, 0).unwrap()
    }

    fn started_with(id: Uuid, hash: &str) -> SessionEvent {
        SessionEvent::SessionStarted {
            session_id: id,
            user_id: Uuid::nil(),
            account_id: Uuid::nil(),
            refresh_token_hash: hash.into(),
            expires_at: t(1000),
        }
    }

    fn refresh(presented: &str, new: &str, now: i64) -> SessionCommand {
        SessionCommand::Refresh {
            presented_hash: presented.into(),
            new_hash: new.into(),
            now: t(now),
            expires_at: t(now + 1000),
        }
    }

    #[test]
    fn the_current_refresh_token_rotates() {
        let id = Uuid::now_v7();
        TestFramework::<Session>::with(())
            .given(vec![started_with(id, "h1")])
            .when(refresh("h1", "h2", 10))
            .then_expect_events(vec![SessionEvent::RefreshTokenRotated {
                session_id: id,
                user_id: Uuid::nil(),
                refresh_token_hash: "h2".into(),
                expires_at: t(1010),
            }]);
    }

    #[test]
    fn a_rotated_token_presented_again_ends_the_session() {
        let id = Uuid::now_v7();
        let rotated = SessionEvent::RefreshTokenRotated {
            session_id: id,
            user_id: Uuid::nil(),
            refresh_token_hash: "h2".into(),
            expires_at: t(1010),
        };
        TestFramework::<Session>::with(())
            .given(vec![started_with(id, "h1"), rotated])
            .when(refresh("h1", "h3", 20))
            .then_expect_events(vec![SessionEvent::SessionEnded {
                session_id: id,
                user_id: Uuid::nil(),
                reason: REFRESH_TOKEN_REUSED.into(),
            }]);
    }

    #[test]
    fn an_expired_or_ended_session_does_not_refresh() {
        let id = Uuid::now_v7();
        TestFramework::<Session>::with(())
            .given(vec![started_with(id, "h1")])
            .when(refresh("h1", "h2", 1000))
            .then_expect_error(SessionError::Expired);
        let ended =
            SessionEvent::SessionEnded { session_id: id, user_id: Uuid::nil(), reason: "logout".into() };
        TestFramework::<Session>::with(())
            .given(vec![started_with(id, "h1"), ended])
            .when(refresh("h1", "h2", 10))
            .then_expect_error(SessionError::NotActive);
    }

    #[test]
    fn stored_names_are_stable() {
        let id = Uuid::nil();
        crate::payload::assert_stored_names(&[
            started(id),
            SessionEvent::RefreshTokenRotated {
                session_id: id,
                user_id: id,
                refresh_token_hash: "h".into(),
                expires_at: t(0),
            },
            SessionEvent::SessionEnded { session_id: id, user_id: id, reason: "r".into() },
        ]);
    }
}
