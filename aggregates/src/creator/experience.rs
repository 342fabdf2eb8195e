//! `Experience`: something a space offers (a live stream, a course, ...), free or priced, seen
//! by holders of an access grant and by those who manage spaces.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::values::ExperienceType;

/// What an experience shows, whole: creation gives it all; an update gives it as it becomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExperienceFields {
    pub name: String,
    pub description: Option<String>,
    pub experience_type: ExperienceType,
    pub price_cents: i64,
    pub currency: String,
    pub published: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExperienceCommand {
    Create { experience_id: Uuid, space_id: Uuid, account_id: Uuid, fields: ExperienceFields, by: Uuid },
    Update { fields: ExperienceFields, by: Uuid },
    Delete { by: Uuid },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ExperienceEvent {
    #[serde(rename = "ExperienceCreated")]
    ExperienceCreated {
        experience_id: Uuid,
        space_id: Uuid,
        account_id: Uuid,
        #[serde(flatten)]
        fields: ExperienceFields,
        created_by: Uuid,
    },
    #[serde(rename = "ExperienceUpdated")]
    ExperienceUpdated {
        experience_id: Uuid,
        space_id: Uuid,
        account_id: Uuid,
        #[serde(flatten)]
        fields: ExperienceFields,
        updated_by: Uuid,
    },
    #[serde(rename = "ExperienceDeleted")]
    ExperienceDeleted { experience_id: Uuid, space_id: Uuid, account_id: Uuid, deleted_by: Uuid },
}

impl crate::catalog::EventTypes for ExperienceEvent {
    const TYPES: &'static [&'static str] = &["ExperienceCreated", "ExperienceUpdated", "ExperienceDeleted"];
}

impl DomainEvent for ExperienceEvent {
    fn event_type(&self) -> String {
        match self {
            ExperienceEvent::ExperienceCreated { .. } => "ExperienceCreated",
            ExperienceEvent::ExperienceUpdated { .. } => "ExperienceUpdated",
            ExperienceEvent::ExperienceDeleted { .. } => "ExperienceDeleted",
        }
        .into()
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExperienceError {
    #[error("the experience already exists")]
    AlreadyCreated,
    #[error("experience not found")]
    NotFound,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experience {
    pub id: Option<Uuid>,
    pub space_id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub fields: Option<ExperienceFields>,
    pub deleted: bool,
}

impl Experience {
    /// The live experience: its id, space and account, or not found.
    pub fn live(&self) -> Result<(Uuid, Uuid, Uuid), ExperienceError> {
        match (self.id, self.space_id, self.account_id) {
            (Some(id), Some(space), Some(account)) if !self.deleted => Ok((id, space, account)),
            _ => Err(ExperienceError::NotFound),
        }
    }
}

impl Aggregate for Experience {
    const TYPE: &'static str = "Experience";
    type Command = ExperienceCommand;
    type Event = ExperienceEvent;
    type Error = ExperienceError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ExperienceCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), ExperienceError> {
        match command {
            ExperienceCommand::Create { experience_id, space_id, account_id, fields, by } => {
                if self.id.is_some() {
                    return Err(ExperienceError::AlreadyCreated);
                }
                let e = ExperienceEvent::ExperienceCreated {
                    experience_id,
                    space_id,
                    account_id,
                    fields,
                    created_by: by,
                };
                sink.write(e, self).await;
            }
            ExperienceCommand::Update { fields, by } => {
                let (experience_id, space_id, account_id) = self.live()?;
                if self.fields.as_ref() != Some(&fields) {
                    let e = ExperienceEvent::ExperienceUpdated {
                        experience_id,
                        space_id,
                        account_id,
                        fields,
                        updated_by: by,
                    };
                    sink.write(e, self).await;
                }
            }
            ExperienceCommand::Delete { by } => {
                let (experience_id, space_id, account_id) = self.live()?;
                let e = ExperienceEvent::ExperienceDeleted {
                    experience_id,
                    space_id,
                    account_id,
                    deleted_by: by,
                };
                sink.write(e, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: ExperienceEvent) {
        match event {
            ExperienceEvent::ExperienceCreated { experience_id, space_id, account_id, fields, .. } => {
                self.id = Some(experience_id);
                self.space_id = Some(space_id);
                self.account_id = Some(account_id);
                self.fields = Some(fields);
            }
            ExperienceEvent::ExperienceUpdated { fields, .. } => self.fields = Some(fields),
            ExperienceEvent::ExperienceDeleted { .. } => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn fields(price: i64) -> ExperienceFields {
        ExperienceFields {
            name: "Launch".into(),
            description: None,
            experience_type: ExperienceType::LiveStream,
            price_cents: price,
            currency: "usd".into(),
            published: true,
        }
    }

    fn created() -> ExperienceEvent {
        ExperienceEvent::ExperienceCreated {
            experience_id: Uuid::from_u128(1),
            space_id: Uuid::from_u128(2),
            account_id: Uuid::from_u128(3),
            fields: fields(0),
            created_by: Uuid::nil(),
        }
    }

    #[test]
    fn an_update_records_the_experience_as_it_becomes_and_nothing_when_unchanged() {
        TestFramework::<Experience>::with(())
            .given(vec![created()])
            .when(ExperienceCommand::Update { fields: fields(0), by: Uuid::nil() })
            .then_expect_events(vec![]);
        TestFramework::<Experience>::with(())
            .given(vec![created()])
            .when(ExperienceCommand::Update { fields: fields(500), by: Uuid::nil() })
            .then_expect_events(vec![ExperienceEvent::ExperienceUpdated {
                experience_id: Uuid::from_u128(1),
                space_id: Uuid::from_u128(2),
                account_id: Uuid::from_u128(3),
                fields: fields(500),
                updated_by: Uuid::nil(),
            }]);
    }

    #[test]
    fn the_stored_event_keeps_its_fields_flat() {
        let json = serde_json::to_value(created()).unwrap();
        assert_eq!(json["ExperienceCreated"]["experience_type"], "live_stream");
        assert_eq!(json["ExperienceCreated"]["price_cents"], 0);
    }
}
