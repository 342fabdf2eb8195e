use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{InvitationCommand, InvitationEvent};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvitationStatus {
    #[default]
    None,
    Pending,
    Accepted,
    Revoked,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invitation {
    pub id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub email: String,
    pub role: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub status: InvitationStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvitationError {
    #[error("the invitation already exists")]
    AlreadyCreated,
    #[error("the invitation does not exist")]
    NotFound,
    #[error("the invitation has expired")]
    Expired,
    #[error("the invitation has already been used")]
    AlreadyAccepted,
    #[error("the invitation has been revoked")]
    Revoked,
    #[error("the invitation was sent to another email address")]
    EmailMismatch,
}

impl Invitation {
    /// The invitation can still be used at `now`, or why not.
    fn usable(&self, now: DateTime<Utc>) -> Result<Uuid, InvitationError> {
        let id = self.id.ok_or(InvitationError::NotFound)?;
        match self.status {
            InvitationStatus::None => Err(InvitationError::NotFound),
            InvitationStatus::Accepted => Err(InvitationError::AlreadyAccepted),
            InvitationStatus::Revoked => Err(InvitationError::Revoked),
            InvitationStatus::Pending if self.expires_at.is_some_and(|at| at <= now) => {
                Err(InvitationError::Expired)
            }
            InvitationStatus::Pending => Ok(id),
        }
    }
}

impl Aggregate for Invitation {
    const TYPE: &'static str = "Invitation";
    type Command = InvitationCommand;
    type Event = InvitationEvent;
    type Error = InvitationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: InvitationCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), InvitationError> {
        match command {
            InvitationCommand::Create {
                invitation_id,
                account_id,
                email,
                role,
                token_hash,
                invited_by,
                expires_at,
            } => {
                if self.id.is_some() {
                    return Err(InvitationError::AlreadyCreated);
                }
                let e = InvitationEvent::InvitationCreated {
                    invitation_id,
                    account_id,
                    email: email.as_str().to_owned(),
                    role,
                    token_hash,
                    invited_by,
                    expires_at,
                };
                sink.write(e, self).await;
            }
            InvitationCommand::Accept { user_id, email, now } => {
                let invitation_id = self.usable(now)?;
                if email.as_str() != self.email {
                    return Err(InvitationError::EmailMismatch);
                }
                sink.write(InvitationEvent::InvitationAccepted { invitation_id, user_id }, self).await;
            }
            InvitationCommand::Revoke { revoked_by } => {
                let invitation_id = self.id.ok_or(InvitationError::NotFound)?;
                match self.status {
                    InvitationStatus::Accepted => return Err(InvitationError::AlreadyAccepted),
                    InvitationStatus::Revoked => return Err(InvitationError::Revoked),
                    _ => {}
                }
                sink.write(InvitationEvent::InvitationRevoked { invitation_id, revoked_by }, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: InvitationEvent) {
        match event {
            InvitationEvent::InvitationCreated {
                invitation_id, account_id, email, role, expires_at, ..
            } => {
                self.id = Some(invitation_id);
                self.account_id = Some(account_id);
                self.email = email;
                self.role = role;
                self.expires_at = Some(expires_at);
                self.status = InvitationStatus::Pending;
            }
            InvitationEvent::InvitationAccepted { .. } => self.status = InvitationStatus::Accepted,
            InvitationEvent::InvitationRevoked { .. } => self.status = InvitationStatus::Revoked,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::values::Email;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn created(id: Uuid) -> InvitationEvent {
        InvitationEvent::InvitationCreated {
            invitation_id: id,
            account_id: Uuid::nil(),
            email: "bob@example.com".into(),
            role: "member".into(),
            token_hash: "h".into(),
            invited_by: Uuid::nil(),
            expires_at: t(0) + Duration::days(7),
        }
    }

    fn accept(email: &str, now: DateTime<Utc>) -> InvitationCommand {
        InvitationCommand::Accept { user_id: Uuid::nil(), email: Email::parse(email).unwrap(), now }
    }

    #[test]
    fn a_pending_invitation_is_accepted_by_its_email() {
        let id = Uuid::now_v7();
        TestFramework::<Invitation>::with(())
            .given(vec![created(id)])
            .when(accept("Bob@Example.com", t(60)))
            .then_expect_events(vec![InvitationEvent::InvitationAccepted {
                invitation_id: id,
                user_id: Uuid::nil(),
            }]);
    }

    #[test]
    fn another_email_cannot_accept() {
        TestFramework::<Invitation>::with(())
            .given(vec![created(Uuid::now_v7())])
            .when(accept("eve@example.com", t(60)))
            .then_expect_error(InvitationError::EmailMismatch);
    }

    #[test]
    fn an_expired_invitation_cannot_be_accepted() {
        TestFramework::<Invitation>::with(())
            .given(vec![created(Uuid::now_v7())])
            .when(accept("bob@example.com", t(0) + Duration::days(7)))
            .then_expect_error(InvitationError::Expired);
    }

    #[test]
    fn an_invitation_is_used_once_and_not_after_revocation() {
        let id = Uuid::now_v7();
        let accepted = InvitationEvent::InvitationAccepted { invitation_id: id, user_id: Uuid::nil() };
        TestFramework::<Invitation>::with(())
            .given(vec![created(id), accepted])
            .when(accept("bob@example.com", t(60)))
            .then_expect_error(InvitationError::AlreadyAccepted);
        let revoked = InvitationEvent::InvitationRevoked { invitation_id: id, revoked_by: Uuid::nil() };
        TestFramework::<Invitation>::with(())
            .given(vec![created(id), revoked])
            .when(accept("bob@example.com", t(60)))
            .then_expect_error(InvitationError::Revoked);
    }

    #[test]
    fn stored_names_are_stable() {
        let id = Uuid::nil();
        crate::payload::assert_stored_names(&[
            created(id),
            InvitationEvent::InvitationAccepted { invitation_id: id, user_id: id },
            InvitationEvent::InvitationRevoked { invitation_id: id, revoked_by: id },
        ]);
    }
}
