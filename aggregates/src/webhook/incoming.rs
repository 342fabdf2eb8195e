//! The `IncomingWebhook` aggregate: a hook bound to one conversation, through which a signed
//! request posts a message as the hook.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::Name;

#[derive(Debug, Clone, PartialEq)]
pub enum IncomingWebhookCommand {
    Create {
        hook_id: Uuid,
        account_id: Uuid,
        /// Checked by the caller: a conversation of the account the creator may post in.
        conversation_id: Uuid,
        name: Name,
        secret_fingerprint: String,
        by: Uuid,
    },
    Delete {
        by: Uuid,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum IncomingWebhookEvent {
    #[serde(rename = "IncomingWebhookCreated")]
    IncomingWebhookCreated {
        hook_id: Uuid,
        account_id: Uuid,
        conversation_id: Uuid,
        name: String,
        secret_fingerprint: String,
        created_by: Uuid,
    },
    #[serde(rename = "IncomingWebhookDeleted")]
    IncomingWebhookDeleted { hook_id: Uuid, account_id: Uuid, deleted_by: Uuid },
}

impl crate::catalog::EventTypes for IncomingWebhookEvent {
    const TYPES: &'static [&'static str] = &["IncomingWebhookCreated", "IncomingWebhookDeleted"];
}

impl DomainEvent for IncomingWebhookEvent {
    fn event_type(&self) -> String {
        match self {
            IncomingWebhookEvent::IncomingWebhookCreated { .. } => "IncomingWebhookCreated".into(),
            IncomingWebhookEvent::IncomingWebhookDeleted { .. } => "IncomingWebhookDeleted".into(),
        }
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IncomingWebhookError {
    #[error("the hook already exists")]
    AlreadyCreated,
    #[error("the hook does not exist")]
    NotFound,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncomingWebhook {
    pub id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub conversation_id: Option<Uuid>,
    pub name: String,
    pub deleted: bool,
}

impl IncomingWebhook {
    /// The hook's account and conversation while it exists.
    pub fn live(&self) -> Option<(Uuid, Uuid)> {
        if self.deleted {
            return None;
        }
        self.account_id.zip(self.conversation_id)
    }
}

impl Aggregate for IncomingWebhook {
    const TYPE: &'static str = "IncomingWebhook";
    type Command = IncomingWebhookCommand;
    type Event = IncomingWebhookEvent;
    type Error = IncomingWebhookError;
    type Services = ();

    async fn handle(
        &mut self,
        command: IncomingWebhookCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), IncomingWebhookError> {
        match command {
            IncomingWebhookCommand::Create {
                hook_id,
                account_id,
                conversation_id,
                name,
                secret_fingerprint,
                by,
            } => {
                if self.id.is_some() {
                    return Err(IncomingWebhookError::AlreadyCreated);
                }
                let created = IncomingWebhookEvent::IncomingWebhookCreated {
                    hook_id,
                    account_id,
                    conversation_id,
                    name: name.as_str().to_owned(),
                    secret_fingerprint,
                    created_by: by,
                };
                sink.write(created, self).await;
            }
            IncomingWebhookCommand::Delete { by } => {
                let (Some(hook_id), Some(account_id)) = (self.id, self.account_id) else {
                    return Err(IncomingWebhookError::NotFound);
                };
                if self.deleted {
                    return Err(IncomingWebhookError::NotFound);
                }
                sink.write(
                    IncomingWebhookEvent::IncomingWebhookDeleted { hook_id, account_id, deleted_by: by },
                    self,
                )
                .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: IncomingWebhookEvent) {
        match event {
            IncomingWebhookEvent::IncomingWebhookCreated {
                hook_id,
                account_id,
                conversation_id,
                name,
                ..
            } => {
                self.id = Some(hook_id);
                self.account_id = Some(account_id);
                self.conversation_id = Some(conversation_id);
                self.name = name;
            }
            IncomingWebhookEvent::IncomingWebhookDeleted { .. } => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type Given = TestFramework<IncomingWebhook>;

    fn created() -> IncomingWebhookEvent {
        IncomingWebhookEvent::IncomingWebhookCreated {
            hook_id: Uuid::from_u128(3),
            account_id: Uuid::nil(),
            conversation_id: Uuid::from_u128(4),
            name: "CI".into(),
            secret_fingerprint: "fp".into(),
            created_by: Uuid::nil(),
        }
    }

    fn deleted() -> IncomingWebhookEvent {
        IncomingWebhookEvent::IncomingWebhookDeleted {
            hook_id: Uuid::from_u128(3),
            account_id: Uuid::nil(),
            deleted_by: Uuid::nil(),
        }
    }

    #[test]
    fn a_hook_is_created_once_and_deleted_once() {
        let create = IncomingWebhookCommand::Create {
            hook_id: Uuid::from_u128(3),
            account_id: Uuid::nil(),
            conversation_id: Uuid::from_u128(4),
            name: Name::parse("CI").unwrap(),
            secret_fingerprint: "fp".into(),
            by: Uuid::nil(),
        };
        Given::with(()).given_no_previous_events().when(create.clone()).then_expect_events(vec![created()]);
        Given::with(())
            .given(vec![created()])
            .when(create)
            .then_expect_error(IncomingWebhookError::AlreadyCreated);
        let delete = IncomingWebhookCommand::Delete { by: Uuid::nil() };
        Given::with(()).given(vec![created()]).when(delete.clone()).then_expect_events(vec![deleted()]);
        Given::with(())
            .given(vec![created(), deleted()])
            .when(delete)
            .then_expect_error(IncomingWebhookError::NotFound);
    }

    #[test]
    fn stored_names_are_the_event_types() {
        crate::payload::assert_stored_names(&[created(), deleted()]);
    }
}
