//! The `WebhookSubscription` aggregate.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub enum WebhookSubscriptionCommand {
    Create {
        subscription_id: Uuid,
        account_id: Uuid,
        /// Checked by the caller: http(s), no private address.
        url: String,
        /// Checked by the caller: known event types, at least one.
        event_types: Vec<String>,
        description: Option<String>,
        secret_fingerprint: String,
        by: Uuid,
    },
    /// Changes what is given; changing nothing records nothing.
    Update {
        url: Option<String>,
        event_types: Option<Vec<String>>,
        description: Option<String>,
        by: Uuid,
    },
    /// A new secret; the previous one still signs until `previous_valid_until`.
    RotateSecret {
        secret_fingerprint: String,
        previous_valid_until: DateTime<Utc>,
        by: Uuid,
    },
    /// By a user (`by`), or by the platform when the endpoint is gone or keeps failing.
    Disable {
        reason: String,
        by: Option<Uuid>,
    },
    Enable {
        by: Uuid,
    },
    Delete {
        by: Uuid,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WebhookSubscriptionEvent {
    #[serde(rename = "WebhookSubscriptionCreated")]
    WebhookSubscriptionCreated {
        subscription_id: Uuid,
        account_id: Uuid,
        url: String,
        event_types: Vec<String>,
        description: Option<String>,
        secret_fingerprint: String,
        created_by: Uuid,
    },
    #[serde(rename = "WebhookSubscriptionUpdated")]
    WebhookSubscriptionUpdated {
        subscription_id: Uuid,
        account_id: Uuid,
        url: String,
        event_types: Vec<String>,
        description: Option<String>,
        updated_by: Uuid,
    },
    #[serde(rename = "WebhookSecretRotated")]
    WebhookSecretRotated {
        subscription_id: Uuid,
        account_id: Uuid,
        secret_fingerprint: String,
        previous_valid_until: DateTime<Utc>,
        rotated_by: Uuid,
    },
    #[serde(rename = "WebhookSubscriptionDisabled")]
    WebhookSubscriptionDisabled {
        subscription_id: Uuid,
        account_id: Uuid,
        reason: String,
        disabled_by: Option<Uuid>,
    },
    #[serde(rename = "WebhookSubscriptionEnabled")]
    WebhookSubscriptionEnabled { subscription_id: Uuid, account_id: Uuid, enabled_by: Uuid },
    #[serde(rename = "WebhookSubscriptionDeleted")]
    WebhookSubscriptionDeleted { subscription_id: Uuid, account_id: Uuid, deleted_by: Uuid },
}

impl crate::catalog::EventTypes for WebhookSubscriptionEvent {
    const TYPES: &'static [&'static str] = &[
        "WebhookSubscriptionCreated",
        "WebhookSubscriptionUpdated",
        "WebhookSecretRotated",
        "WebhookSubscriptionDisabled",
        "WebhookSubscriptionEnabled",
        "WebhookSubscriptionDeleted",
    ];
}

impl DomainEvent for WebhookSubscriptionEvent {
    fn event_type(&self) -> String {
        use WebhookSubscriptionEvent::*;
        match self {
            WebhookSubscriptionCreated { .. } => "WebhookSubscriptionCreated",
            WebhookSubscriptionUpdated { .. } => "WebhookSubscriptionUpdated",
            WebhookSecretRotated { .. } => "WebhookSecretRotated",
            WebhookSubscriptionDisabled { .. } => "WebhookSubscriptionDisabled",
            WebhookSubscriptionEnabled { .. } => "WebhookSubscriptionEnabled",
            WebhookSubscriptionDeleted { .. } => "WebhookSubscriptionDeleted",
        }
        .into()
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookSubscriptionError {
    #[error("the subscription already exists")]
    AlreadyCreated,
    #[error("the subscription does not exist")]
    NotFound,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookSubscription {
    pub id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub deleted: bool,
}

impl WebhookSubscription {
    fn live(&self) -> Result<(Uuid, Uuid), WebhookSubscriptionError> {
        match (self.id, self.account_id) {
            (Some(id), Some(account)) if !self.deleted => Ok((id, account)),
            _ => Err(WebhookSubscriptionError::NotFound),
        }
    }
}

impl Aggregate for WebhookSubscription {
    const TYPE: &'static str = "WebhookSubscription";
    type Command = WebhookSubscriptionCommand;
    type Event = WebhookSubscriptionEvent;
    type Error = WebhookSubscriptionError;
    type Services = ();

    async fn handle(
        &mut self,
        command: WebhookSubscriptionCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), WebhookSubscriptionError> {
        use WebhookSubscriptionCommand as C;
        use WebhookSubscriptionEvent as E;
        if let C::Create {
            subscription_id,
            account_id,
            url,
            event_types,
            description,
            secret_fingerprint,
            by,
        } = command
        {
            if self.id.is_some() {
                return Err(WebhookSubscriptionError::AlreadyCreated);
            }
            let event_types = sorted(event_types);
            let created = E::WebhookSubscriptionCreated {
                subscription_id,
                account_id,
                url,
                event_types,
                description,
                secret_fingerprint,
                created_by: by,
            };
            sink.write(created, self).await;
            return Ok(());
        }
        let (subscription_id, account_id) = self.live()?;
        let event = match command {
            C::Create { .. } => None,
            C::Update { url, event_types, description, by } => {
                let url = url.unwrap_or_else(|| self.url.clone());
                let event_types = event_types.map(sorted).unwrap_or_else(|| self.event_types.clone());
                let description = description.or_else(|| self.description.clone());
                let changed =
                    url != self.url || event_types != self.event_types || description != self.description;
                changed.then_some(E::WebhookSubscriptionUpdated {
                    subscription_id,
                    account_id,
                    url,
                    event_types,
                    description,
                    updated_by: by,
                })
            }
            C::RotateSecret { secret_fingerprint, previous_valid_until, by } => {
                Some(E::WebhookSecretRotated {
                    subscription_id,
                    account_id,
                    secret_fingerprint,
                    previous_valid_until,
                    rotated_by: by,
                })
            }
            C::Disable { reason, by } => self.enabled.then_some(E::WebhookSubscriptionDisabled {
                subscription_id,
                account_id,
                reason,
                disabled_by: by,
            }),
            C::Enable { by } => (!self.enabled).then_some(E::WebhookSubscriptionEnabled {
                subscription_id,
                account_id,
                enabled_by: by,
            }),
            C::Delete { by } => {
                Some(E::WebhookSubscriptionDeleted { subscription_id, account_id, deleted_by: by })
            }
        };
        if let Some(event) = event {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: WebhookSubscriptionEvent) {
        use WebhookSubscriptionEvent as E;
        match event {
            E::WebhookSubscriptionCreated {
                subscription_id,
                account_id,
                url,
                event_types,
                description,
                ..
            } => {
                self.id = Some(subscription_id);
                self.account_id = Some(account_id);
                self.url = url;
                self.event_types = event_types;
                self.description = description;
                self.enabled = true;
            }
            E::WebhookSubscriptionUpdated { url, event_types, description, .. } => {
                self.url = url;
                self.event_types = event_types;
                self.description = description;
            }
            E::WebhookSecretRotated { .. } => {}
            E::WebhookSubscriptionDisabled { reason, .. } => {
                self.enabled = false;
                self.disabled_reason = Some(reason);
            }
            E::WebhookSubscriptionEnabled { .. } => {
                self.enabled = true;
                self.disabled_reason = None;
            }
            E::WebhookSubscriptionDeleted { .. } => self.deleted = true,
        }
    }
}

fn sorted(mut types: Vec<String>) -> Vec<String> {
    types.sort();
    types.dedup();
    types
}

#[cfg(test)]
#[path = "subscription_tests.rs"]
mod tests;
