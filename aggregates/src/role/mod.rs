//! The `Role` aggregate: a custom role of an account, a named set of permissions. System roles
//! (`owner`, `admin`, `member`) are not aggregates: they are fixed in code and cannot change.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::permissions::Permission;
use crate::values::Name;

#[derive(Debug, Clone, PartialEq)]
pub enum RoleCommand {
    Create {
        role_id: Uuid,
        account_id: Uuid,
        name: Name,
        permissions: Vec<Permission>,
        by: Uuid,
    },
    /// Changes what is given; the events carry the whole role after the change.
    Update {
        name: Option<Name>,
        permissions: Option<Vec<Permission>>,
        by: Uuid,
    },
    Delete {
        by: Uuid,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RoleEvent {
    #[serde(rename = "RoleCreated")]
    RoleCreated {
        role_id: Uuid,
        account_id: Uuid,
        name: String,
        permissions: Vec<Permission>,
        created_by: Uuid,
    },
    #[serde(rename = "RoleUpdated")]
    RoleUpdated {
        role_id: Uuid,
        account_id: Uuid,
        name: String,
        permissions: Vec<Permission>,
        updated_by: Uuid,
    },
    #[serde(rename = "RoleDeleted")]
    RoleDeleted { role_id: Uuid, account_id: Uuid, name: String, deleted_by: Uuid },
}

impl crate::catalog::EventTypes for RoleEvent {
    const TYPES: &'static [&'static str] = &["RoleCreated", "RoleUpdated", "RoleDeleted"];
}

impl DomainEvent for RoleEvent {
    fn event_type(&self) -> String {
        match self {
            RoleEvent::RoleCreated { .. } => "RoleCreated".into(),
            RoleEvent::RoleUpdated { .. } => "RoleUpdated".into(),
            RoleEvent::RoleDeleted { .. } => "RoleDeleted".into(),
        }
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error("the role already exists")]
    AlreadyCreated,
    #[error("the role does not exist")]
    NotFound,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    pub id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub name: String,
    pub permissions: Vec<Permission>,
    pub deleted: bool,
}

impl Role {
    fn live(&self) -> Result<(Uuid, Uuid), RoleError> {
        match (self.id, self.account_id) {
            (Some(id), Some(account)) if !self.deleted => Ok((id, account)),
            _ => Err(RoleError::NotFound),
        }
    }
}

/// A set of permissions, sorted and without repeats.
fn normalized(mut permissions: Vec<Permission>) -> Vec<Permission> {
    permissions.sort();
    permissions.dedup();
    permissions
}

impl Aggregate for Role {
    const TYPE: &'static str = "Role";
    type Command = RoleCommand;
    type Event = RoleEvent;
    type Error = RoleError;
    type Services = ();

    async fn handle(
        &mut self,
        command: RoleCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), RoleError> {
        match command {
            RoleCommand::Create { role_id, account_id, name, permissions, by } => {
                if self.id.is_some() {
                    return Err(RoleError::AlreadyCreated);
                }
                let permissions = normalized(permissions);
                let name = name.as_str().to_owned();
                sink.write(
                    RoleEvent::RoleCreated { role_id, account_id, name, permissions, created_by: by },
                    self,
                )
                .await;
            }
            RoleCommand::Update { name, permissions, by } => {
                let (role_id, account_id) = self.live()?;
                let name = name.map_or_else(|| self.name.clone(), |n| n.as_str().to_owned());
                let permissions = permissions.map_or_else(|| self.permissions.clone(), normalized);
                if name != self.name || permissions != self.permissions {
                    let e = RoleEvent::RoleUpdated { role_id, account_id, name, permissions, updated_by: by };
                    sink.write(e, self).await;
                }
            }
            RoleCommand::Delete { by } => {
                let (role_id, account_id) = self.live()?;
                let name = self.name.clone();
                sink.write(RoleEvent::RoleDeleted { role_id, account_id, name, deleted_by: by }, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: RoleEvent) {
        match event {
            RoleEvent::RoleCreated { role_id, account_id, name, permissions, .. } => {
                self.id = Some(role_id);
                self.account_id = Some(account_id);
                self.name = name;
                self.permissions = permissions;
            }
            RoleEvent::RoleUpdated { name, permissions, .. } => {
                self.name = name;
                self.permissions = permissions;
            }
            RoleEvent::RoleDeleted { .. } => self.deleted = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::permissions::Permission::*;

    type Given = TestFramework<Role>;

    fn id() -> Uuid {
        Uuid::from_u128(1)
    }

    fn created() -> RoleEvent {
        RoleEvent::RoleCreated {
            role_id: id(),
            account_id: Uuid::nil(),
            name: "Support".into(),
            permissions: vec![UsersView, AuditView],
            created_by: Uuid::nil(),
        }
    }

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    #[test]
    fn a_role_is_created_with_its_permissions_sorted_once_each() {
        Given::with(())
            .given_no_previous_events()
            .when(RoleCommand::Create {
                role_id: id(),
                account_id: Uuid::nil(),
                name: name("Support"),
                permissions: vec![AuditView, UsersView, AuditView],
                by: Uuid::nil(),
            })
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn an_update_carries_the_whole_role_and_an_update_that_changes_nothing_writes_nothing() {
        Given::with(())
            .given(vec![created()])
            .when(RoleCommand::Update { name: None, permissions: Some(vec![UsersView]), by: Uuid::nil() })
            .then_expect_events(vec![RoleEvent::RoleUpdated {
                role_id: id(),
                account_id: Uuid::nil(),
                name: "Support".into(),
                permissions: vec![UsersView],
                updated_by: Uuid::nil(),
            }]);
        Given::with(())
            .given(vec![created()])
            .when(RoleCommand::Update {
                name: Some(name("Support")),
                permissions: Some(vec![AuditView, UsersView]),
                by: Uuid::nil(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_deleted_or_unknown_role_cannot_change_or_be_deleted_again() {
        let deleted = RoleEvent::RoleDeleted {
            role_id: id(),
            account_id: Uuid::nil(),
            name: "Support".into(),
            deleted_by: Uuid::nil(),
        };
        Given::with(())
            .given(vec![created(), deleted])
            .when(RoleCommand::Delete { by: Uuid::nil() })
            .then_expect_error(RoleError::NotFound);
        Given::with(())
            .given_no_previous_events()
            .when(RoleCommand::Update { name: None, permissions: None, by: Uuid::nil() })
            .then_expect_error(RoleError::NotFound);
        Given::with(())
            .given(vec![created()])
            .when(RoleCommand::Create {
                role_id: id(),
                account_id: Uuid::nil(),
                name: name("Again"),
                permissions: vec![],
                by: Uuid::nil(),
            })
            .then_expect_error(RoleError::AlreadyCreated);
    }

    #[test]
    fn stored_names_are_the_event_types() {
        let events = [
            created(),
            RoleEvent::RoleUpdated {
                role_id: id(),
                account_id: Uuid::nil(),
                name: "y".into(),
                permissions: vec![],
                updated_by: Uuid::nil(),
            },
            RoleEvent::RoleDeleted {
                role_id: id(),
                account_id: Uuid::nil(),
                name: "x".into(),
                deleted_by: Uuid::nil(),
            },
        ];
        crate::payload::assert_stored_names(&events);
    }
}
