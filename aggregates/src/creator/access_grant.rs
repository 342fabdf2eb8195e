//! `AccessGrant`: a user of the account may see an experience (its content, streams and chat)
//! until `expires_at`, or until it is revoked. Expiry holds at read time (a grant past its time
//! is not active, whatever the log says yet) and a job records `AccessGrantExpired`.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a grant came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum GrantSource {
    /// Given by a member who manages spaces.
    Manual { granted_by: Uuid },
    /// Bought through the payment provider's checkout session.
    Checkout { session_id: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum AccessGrantCommand {
    Grant {
        grant_id: Uuid,
        account_id: Uuid,
        user_id: Uuid,
        experience_id: Uuid,
        expires_at: Option<DateTime<Utc>>,
        source: GrantSource,
    },
    Revoke {
        by: Uuid,
    },
    /// Recorded by the expiry job once `now` is past `expires_at`.
    Expire {
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccessGrantEvent {
    #[serde(rename = "AccessGranted")]
    AccessGranted {
        grant_id: Uuid,
        account_id: Uuid,
        user_id: Uuid,
        experience_id: Uuid,
        expires_at: Option<DateTime<Utc>>,
        source: GrantSource,
    },
    #[serde(rename = "AccessGrantRevoked")]
    AccessGrantRevoked {
        grant_id: Uuid,
        account_id: Uuid,
        user_id: Uuid,
        experience_id: Uuid,
        revoked_by: Uuid,
    },
    #[serde(rename = "AccessGrantExpired")]
    AccessGrantExpired { grant_id: Uuid, account_id: Uuid, user_id: Uuid, experience_id: Uuid },
}

impl crate::catalog::EventTypes for AccessGrantEvent {
    const TYPES: &'static [&'static str] = &["AccessGranted", "AccessGrantRevoked", "AccessGrantExpired"];
}

impl DomainEvent for AccessGrantEvent {
    fn event_type(&self) -> String {
        match self {
            AccessGrantEvent::AccessGranted { .. } => "AccessGranted",
            AccessGrantEvent::AccessGrantRevoked { .. } => "AccessGrantRevoked",
            AccessGrantEvent::AccessGrantExpired { .. } => "AccessGrantExpired",
        }
        .into()
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessGrantError {
    #[error("the access grant already exists")]
    AlreadyCreated,
    #[error("access grant not found")]
    NotFound,
    #[error("the access grant has already ended")]
    Ended,
    #[error("the access grant has not reached its expiry")]
    NotExpired,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessGrant {
    pub id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub experience_id: Option<Uuid>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Revoked or recorded as expired.
    pub ended: bool,
}

impl AccessGrant {
    /// Whether the grant lets its user in at `now`.
    pub fn active_at(&self, now: DateTime<Utc>) -> bool {
        self.id.is_some() && !self.ended && self.expires_at.is_none_or(|at| at > now)
    }

    fn parts(&self) -> Result<(Uuid, Uuid, Uuid, Uuid), AccessGrantError> {
        match (self.id, self.account_id, self.user_id, self.experience_id) {
            (Some(g), Some(a), Some(u), Some(e)) => Ok((g, a, u, e)),
            _ => Err(AccessGrantError::NotFound),
        }
    }
}

impl Aggregate for AccessGrant {
    const TYPE: &'static str = "AccessGrant";
    type Command = AccessGrantCommand;
    type Event = AccessGrantEvent;
    type Error = AccessGrantError;
    type Services = ();

    async fn handle(
        &mut self,
        command: AccessGrantCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), AccessGrantError> {
        match command {
            AccessGrantCommand::Grant {
                grant_id,
                account_id,
                user_id,
                experience_id,
                expires_at,
                source,
            } => {
                if self.id.is_some() {
                    return Err(AccessGrantError::AlreadyCreated);
                }
                let e = AccessGrantEvent::AccessGranted {
                    grant_id,
                    account_id,
                    user_id,
                    experience_id,
                    expires_at,
                    source,
                };
                sink.write(e, self).await;
            }
            AccessGrantCommand::Revoke { by } => {
                let (grant_id, account_id, user_id, experience_id) = self.parts()?;
                if self.ended {
                    return Err(AccessGrantError::Ended);
                }
                let e = AccessGrantEvent::AccessGrantRevoked {
                    grant_id,
                    account_id,
                    user_id,
                    experience_id,
                    revoked_by: by,
                };
                sink.write(e, self).await;
            }
            AccessGrantCommand::Expire { now } => {
                let (grant_id, account_id, user_id, experience_id) = self.parts()?;
                if self.ended {
                    // Revoked first, or a retried job: nothing more to record.
                    return Ok(());
                }
                if self.expires_at.is_none_or(|at| at > now) {
                    return Err(AccessGrantError::NotExpired);
                }
                sink.write(
                    AccessGrantEvent::AccessGrantExpired { grant_id, account_id, user_id, experience_id },
                    self,
                )
                .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: AccessGrantEvent) {
        match event {
            AccessGrantEvent::AccessGranted {
                grant_id,
                account_id,
                user_id,
                experience_id,
                expires_at,
                ..
            } => {
                self.id = Some(grant_id);
                self.account_id = Some(account_id);
                self.user_id = Some(user_id);
                self.experience_id = Some(experience_id);
                self.expires_at = expires_at;
            }
            AccessGrantEvent::AccessGrantRevoked { .. } | AccessGrantEvent::AccessGrantExpired { .. } => {
                self.ended = true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use cqrs_es::test::TestFramework;

    use super::*;

    type Given = TestFramework<AccessGrant>;

    fn granted(expires_at: Option<DateTime<Utc>>) -> AccessGrantEvent {
        AccessGrantEvent::AccessGranted {
            grant_id: Uuid::from_u128(1),
            account_id: Uuid::from_u128(2),
            user_id: Uuid::from_u128(3),
            experience_id: Uuid::from_u128(4),
            expires_at,
            source: GrantSource::Manual { granted_by: Uuid::nil() },
        }
    }

    fn expired() -> AccessGrantEvent {
        AccessGrantEvent::AccessGrantExpired {
            grant_id: Uuid::from_u128(1),
            account_id: Uuid::from_u128(2),
            user_id: Uuid::from_u128(3),
            experience_id: Uuid::from_u128(4),
        }
    }

    #[test]
    fn a_grant_expires_only_once_its_time_has_passed() {
        let at = DateTime::<Utc>::UNIX_EPOCH + Duration::days(1);
        Given::with(())
            .given(vec![granted(Some(at))])
            .when(AccessGrantCommand::Expire { now: at - Duration::seconds(1) })
            .then_expect_error(AccessGrantError::NotExpired);
        Given::with(())
            .given(vec![granted(Some(at))])
            .when(AccessGrantCommand::Expire { now: at })
            .then_expect_events(vec![expired()]);
        Given::with(())
            .given(vec![granted(None)])
            .when(AccessGrantCommand::Expire { now: at })
            .then_expect_error(AccessGrantError::NotExpired);
        Given::with(())
            .given(vec![granted(Some(at)), expired()])
            .when(AccessGrantCommand::Expire { now: at })
            .then_expect_events(vec![]);
    }

    #[test]
    fn an_ended_grant_cannot_be_revoked_and_is_not_active() {
        let at = DateTime::<Utc>::UNIX_EPOCH + Duration::days(1);
        Given::with(())
            .given(vec![granted(Some(at)), expired()])
            .when(AccessGrantCommand::Revoke { by: Uuid::nil() })
            .then_expect_error(AccessGrantError::Ended);
        let mut grant = AccessGrant::default();
        grant.apply(granted(Some(at)));
        assert!(grant.active_at(at - Duration::seconds(1)));
        assert!(!grant.active_at(at), "a grant past its time is not active before the job records it");
    }
}
