//! `Space`: where an account's experiences live. Every account has one primary space, opened
//! with the account; its slug is unique in the account (a claim of the write side).

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::values::Slug;
use crate::values::Name;

#[derive(Debug, Clone, PartialEq)]
pub enum SpaceCommand {
    Create {
        space_id: Uuid,
        account_id: Uuid,
        name: Name,
        slug: Slug,
        description: Option<String>,
        primary: bool,
        by: Uuid,
    },
    /// Changes what is given (`description: Some(None)` clears it).
    Update {
        name: Option<Name>,
        slug: Option<Slug>,
        description: Option<Option<String>>,
        by: Uuid,
    },
    Delete {
        by: Uuid,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SpaceEvent {
    #[serde(rename = "SpaceCreated")]
    SpaceCreated {
        space_id: Uuid,
        account_id: Uuid,
        name: String,
        slug: String,
        description: Option<String>,
        is_primary: bool,
        created_by: Uuid,
    },
    /// The space as it is after the change.
    #[serde(rename = "SpaceUpdated")]
    SpaceUpdated {
        space_id: Uuid,
        account_id: Uuid,
        name: String,
        slug: String,
        description: Option<String>,
        updated_by: Uuid,
    },
    #[serde(rename = "SpaceDeleted")]
    SpaceDeleted { space_id: Uuid, account_id: Uuid, deleted_by: Uuid },
}

impl crate::catalog::EventTypes for SpaceEvent {
    const TYPES: &'static [&'static str] = &["SpaceCreated", "SpaceUpdated", "SpaceDeleted"];
}

impl DomainEvent for SpaceEvent {
    fn event_type(&self) -> String {
        match self {
            SpaceEvent::SpaceCreated { .. } => "SpaceCreated",
            SpaceEvent::SpaceUpdated { .. } => "SpaceUpdated",
            SpaceEvent::SpaceDeleted { .. } => "SpaceDeleted",
        }
        .into()
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpaceError {
    #[error("the space already exists")]
    AlreadyCreated,
    #[error("space not found")]
    NotFound,
    #[error("the primary space cannot be deleted")]
    Primary,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Space {
    pub id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub name: String,
    pub slug: String,
    pub description: Option<String>,
    pub is_primary: bool,
    pub deleted: bool,
}

impl Space {
    /// The live space's id and account, or not found.
    pub fn live(&self) -> Result<(Uuid, Uuid), SpaceError> {
        match (self.id, self.account_id) {
            (Some(id), Some(account)) if !self.deleted => Ok((id, account)),
            _ => Err(SpaceError::NotFound),
        }
    }
}

impl Aggregate for Space {
    const TYPE: &'static str = "Space";
    type Command = SpaceCommand;
    type Event = SpaceEvent;
    type Error = SpaceError;
    type Services = ();

    async fn handle(
        &mut self,
        command: SpaceCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), SpaceError> {
        match command {
            SpaceCommand::Create { space_id, account_id, name, slug, description, primary, by } => {
                if self.id.is_some() {
                    return Err(SpaceError::AlreadyCreated);
                }
                let e = SpaceEvent::SpaceCreated {
                    space_id,
                    account_id,
                    name: name.as_str().to_owned(),
                    slug: slug.as_str().to_owned(),
                    description,
                    is_primary: primary,
                    created_by: by,
                };
                sink.write(e, self).await;
            }
            SpaceCommand::Update { name, slug, description, by } => {
                let (space_id, account_id) = self.live()?;
                let name = name.map_or_else(|| self.name.clone(), |n| n.as_str().to_owned());
                let slug = slug.map_or_else(|| self.slug.clone(), |s| s.as_str().to_owned());
                let description = description.unwrap_or_else(|| self.description.clone());
                if name != self.name || slug != self.slug || description != self.description {
                    let e = SpaceEvent::SpaceUpdated {
                        space_id,
                        account_id,
                        name,
                        slug,
                        description,
                        updated_by: by,
                    };
                    sink.write(e, self).await;
                }
            }
            SpaceCommand::Delete { by } => {
                let (space_id, account_id) = self.live()?;
                if self.is_primary {
                    return Err(SpaceError::Primary);
                }
                sink.write(SpaceEvent::SpaceDeleted { space_id, account_id, deleted_by: by }, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: SpaceEvent) {
        match event {
            SpaceEvent::SpaceCreated {
                space_id, account_id, name, slug, description, is_primary, ..
            } => {
                *self = Space {
                    id: Some(space_id),
                    account_id: Some(account_id),
                    name,
                    slug,
                    description,
                    is_primary,
                    deleted: false,
                };
            }
            SpaceEvent::SpaceUpdated { name, slug, description, .. } => {
                self.name = name;
                self.slug = slug;
                self.description = description;
            }
            SpaceEvent::SpaceDeleted { .. } => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type Given = TestFramework<Space>;

    fn created(primary: bool) -> SpaceEvent {
        SpaceEvent::SpaceCreated {
            space_id: Uuid::from_u128(1),
            account_id: Uuid::from_u128(2),
            name: "Main".into(),
            slug: "main".into(),
            description: None,
            is_primary: primary,
            created_by: Uuid::nil(),
        }
    }

    #[test]
    fn the_primary_space_cannot_be_deleted_and_another_can() {
        Given::with(())
            .given(vec![created(true)])
            .when(SpaceCommand::Delete { by: Uuid::nil() })
            .then_expect_error(SpaceError::Primary);
        Given::with(())
            .given(vec![created(false)])
            .when(SpaceCommand::Delete { by: Uuid::nil() })
            .then_expect_events(vec![SpaceEvent::SpaceDeleted {
                space_id: Uuid::from_u128(1),
                account_id: Uuid::from_u128(2),
                deleted_by: Uuid::nil(),
            }]);
    }

    #[test]
    fn an_update_that_changes_nothing_records_nothing() {
        let same = SpaceCommand::Update {
            name: None,
            slug: Some(Slug::parse("main").unwrap()),
            description: None,
            by: Uuid::nil(),
        };
        Given::with(()).given(vec![created(true)]).when(same).then_expect_events(vec![]);
    }

    #[test]
    fn a_deleted_space_is_not_found() {
        let deleted = SpaceEvent::SpaceDeleted {
            space_id: Uuid::from_u128(1),
            account_id: Uuid::from_u128(2),
            deleted_by: Uuid::nil(),
        };
        let rename = SpaceCommand::Update {
            name: Some(Name::parse("X").unwrap()),
            slug: None,
            description: None,
            by: Uuid::nil(),
        };
        Given::with(())
            .given(vec![created(false), deleted])
            .when(rename)
            .then_expect_error(SpaceError::NotFound);
    }
}
