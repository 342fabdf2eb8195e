//! The `ApiKey` aggregate: a credential of an account for programs, with its own permissions.
//! Its secret is shown once and kept only as a hash; its use is recorded at most once a minute.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::permissions::Permission;
use crate::values::Name;

/// Uses closer together than this are one use, as far as the log is concerned.
pub const USE_RECORDED_EVERY: Duration = Duration::seconds(60);

#[derive(Debug, Clone, PartialEq)]
pub enum ApiKeyCommand {
    Create {
        api_key_id: Uuid,
        account_id: Uuid,
        name: Name,
        permissions: Vec<Permission>,
        /// The visible start of the secret, to tell keys apart.
        prefix: String,
        secret_hash: String,
        expires_at: Option<DateTime<Utc>>,
        by: Uuid,
    },
    Revoke {
        by: Uuid,
    },
    /// The key authenticated a request at `at`.
    RecordUse {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ApiKeyEvent {
    #[serde(rename = "ApiKeyCreated")]
    ApiKeyCreated {
        api_key_id: Uuid,
        account_id: Uuid,
        name: String,
        permissions: Vec<Permission>,
        prefix: String,
        secret_hash: String,
        expires_at: Option<DateTime<Utc>>,
        created_by: Uuid,
    },
    #[serde(rename = "ApiKeyRevoked")]
    ApiKeyRevoked { api_key_id: Uuid, account_id: Uuid, revoked_by: Uuid },
    #[serde(rename = "ApiKeyUsed")]
    ApiKeyUsed { api_key_id: Uuid, account_id: Uuid, at: DateTime<Utc> },
}

impl crate::catalog::EventTypes for ApiKeyEvent {
    const TYPES: &'static [&'static str] = &["ApiKeyCreated", "ApiKeyRevoked", "ApiKeyUsed"];
}

impl DomainEvent for ApiKeyEvent {
    fn event_type(&self) -> String {
        match self {
            ApiKeyEvent::ApiKeyCreated { .. } => "ApiKeyCreated".into(),
            ApiKeyEvent::ApiKeyRevoked { .. } => "ApiKeyRevoked".into(),
            ApiKeyEvent::ApiKeyUsed { .. } => "ApiKeyUsed".into(),
        }
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("the API key already exists")]
    AlreadyCreated,
    #[error("the API key does not exist")]
    NotFound,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub name: String,
    pub permissions: Vec<Permission>,
    pub prefix: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    fn created(&self) -> Result<(Uuid, Uuid), ApiKeyError> {
        self.id.zip(self.account_id).ok_or(ApiKeyError::NotFound)
    }

    /// Whether the key authenticates requests at `at`.
    pub fn valid_at(&self, at: DateTime<Utc>) -> bool {
        self.id.is_some() && !self.revoked && self.expires_at.is_none_or(|e| at < e)
    }
}

impl Aggregate for ApiKey {
    const TYPE: &'static str = "ApiKey";
    type Command = ApiKeyCommand;
    type Event = ApiKeyEvent;
    type Error = ApiKeyError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ApiKeyCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), ApiKeyError> {
        match command {
            ApiKeyCommand::Create {
                api_key_id,
                account_id,
                name,
                mut permissions,
                prefix,
                secret_hash,
                expires_at,
                by,
            } => {
                if self.id.is_some() {
                    return Err(ApiKeyError::AlreadyCreated);
                }
                permissions.sort();
                permissions.dedup();
                let e = ApiKeyEvent::ApiKeyCreated {
                    api_key_id,
                    account_id,
                    name: name.as_str().to_owned(),
                    permissions,
                    prefix,
                    secret_hash,
                    expires_at,
                    created_by: by,
                };
                sink.write(e, self).await;
            }
            // Revoking a revoked key changes nothing.
            ApiKeyCommand::Revoke { by } => {
                let (api_key_id, account_id) = self.created()?;
                if !self.revoked {
                    sink.write(ApiKeyEvent::ApiKeyRevoked { api_key_id, account_id, revoked_by: by }, self)
                        .await;
                }
            }
            // Uses of a key that no longer works, and uses within a minute of the last recorded
            // one, are not recorded: the log holds at most one use per key per minute, however
            // many nodes see it.
            ApiKeyCommand::RecordUse { at } => {
                let (api_key_id, account_id) = self.created()?;
                let recent = self.last_used_at.is_some_and(|last| at < last + USE_RECORDED_EVERY);
                if self.valid_at(at) && !recent {
                    sink.write(ApiKeyEvent::ApiKeyUsed { api_key_id, account_id, at }, self).await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: ApiKeyEvent) {
        match event {
            ApiKeyEvent::ApiKeyCreated {
                api_key_id,
                account_id,
                name,
                permissions,
                prefix,
                expires_at,
                ..
            } => {
                self.id = Some(api_key_id);
                self.account_id = Some(account_id);
                self.name = name;
                self.permissions = permissions;
                self.prefix = prefix;
                self.expires_at = expires_at;
            }
            ApiKeyEvent::ApiKeyRevoked { .. } => self.revoked = true,
            ApiKeyEvent::ApiKeyUsed { at, .. } => self.last_used_at = Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::permissions::Permission::*;

    type Given = TestFramework<ApiKey>;

    fn id() -> Uuid {
        Uuid::from_u128(7)
    }

    fn t(minute: u32, second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 10, minute, second).unwrap()
    }

    fn created(expires_at: Option<DateTime<Utc>>) -> ApiKeyEvent {
        ApiKeyEvent::ApiKeyCreated {
            api_key_id: id(),
            account_id: Uuid::nil(),
            name: "CI".into(),
            permissions: vec![UsersView, AuditView],
            prefix: "pk_abcdefgh".into(),
            secret_hash: "hash".into(),
            expires_at,
            created_by: Uuid::nil(),
        }
    }

    fn used(at: DateTime<Utc>) -> ApiKeyEvent {
        ApiKeyEvent::ApiKeyUsed { api_key_id: id(), account_id: Uuid::nil(), at }
    }

    fn revoked() -> ApiKeyEvent {
        ApiKeyEvent::ApiKeyRevoked { api_key_id: id(), account_id: Uuid::nil(), revoked_by: Uuid::nil() }
    }

    #[test]
    fn a_key_is_created_once_with_its_permissions_sorted_once_each() {
        let create = ApiKeyCommand::Create {
            api_key_id: id(),
            account_id: Uuid::nil(),
            name: Name::parse("CI").unwrap(),
            permissions: vec![AuditView, UsersView, AuditView],
            prefix: "pk_abcdefgh".into(),
            secret_hash: "hash".into(),
            expires_at: None,
            by: Uuid::nil(),
        };
        Given::with(())
            .given_no_previous_events()
            .when(create.clone())
            .then_expect_events(vec![created(None)]);
        Given::with(())
            .given(vec![created(None)])
            .when(create)
            .then_expect_error(ApiKeyError::AlreadyCreated);
    }

    #[test]
    fn revoking_ends_the_key_once_and_an_unknown_key_cannot_be_revoked() {
        Given::with(())
            .given(vec![created(None)])
            .when(ApiKeyCommand::Revoke { by: Uuid::nil() })
            .then_expect_events(vec![revoked()]);
        Given::with(())
            .given(vec![created(None), revoked()])
            .when(ApiKeyCommand::Revoke { by: Uuid::nil() })
            .then_expect_events(vec![]);
        Given::with(())
            .given_no_previous_events()
            .when(ApiKeyCommand::Revoke { by: Uuid::nil() })
            .then_expect_error(ApiKeyError::NotFound);
    }

    #[test]
    fn a_use_is_recorded_at_most_once_a_minute() {
        Given::with(())
            .given(vec![created(None)])
            .when(ApiKeyCommand::RecordUse { at: t(0, 0) })
            .then_expect_events(vec![used(t(0, 0))]);
        Given::with(())
            .given(vec![created(None), used(t(0, 0))])
            .when(ApiKeyCommand::RecordUse { at: t(0, 59) })
            .then_expect_events(vec![]);
        Given::with(())
            .given(vec![created(None), used(t(0, 0))])
            .when(ApiKeyCommand::RecordUse { at: t(1, 0) })
            .then_expect_events(vec![used(t(1, 0))]);
    }

    #[test]
    fn uses_of_a_revoked_or_expired_key_are_not_recorded() {
        Given::with(())
            .given(vec![created(None), revoked()])
            .when(ApiKeyCommand::RecordUse { at: t(0, 0) })
            .then_expect_events(vec![]);
        Given::with(())
            .given(vec![created(Some(t(5, 0)))])
            .when(ApiKeyCommand::RecordUse { at: t(5, 0) })
            .then_expect_events(vec![]);
        Given::with(())
            .given(vec![created(Some(t(5, 0)))])
            .when(ApiKeyCommand::RecordUse { at: t(4, 59) })
            .then_expect_events(vec![used(t(4, 59))]);
    }

    #[test]
    fn stored_names_are_the_event_types() {
        crate::payload::assert_stored_names(&[created(Some(t(1, 0))), revoked(), used(t(0, 0))]);
    }
}
