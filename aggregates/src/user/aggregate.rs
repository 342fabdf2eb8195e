use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{UserCommand, UserEvent};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub avatar_url: Option<String>,
    #[serde(default)]
    pub bio: Option<String>,
    pub email: String,
    pub password_hash: String,
    /// The last [`PASSWORD_HISTORY`] hashes, the current one last: none may be chosen again.
    #[serde(default)]
    pub password_history: Vec<String>,
    pub roles: Vec<String>,
    pub active: bool,
}

/// How many recent passwords may not be reused.
pub const PASSWORD_HISTORY: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("the user is already registered")]
    AlreadyRegistered,
    #[error("a user needs at least one role")]
    NoRole,
    #[error("the user does not exist")]
    NotFound,
    #[error("the user is not active")]
    NotActive,
    #[error("you cannot deactivate yourself")]
    CannotDeactivateSelf,
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: UserCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        match command {
            UserCommand::Register {
                user_id,
                account_id,
                name,
                email,
                password_hash,
                roles,
                invitation_id,
            } => {
                if self.id.is_some() {
                    return Err(UserError::AlreadyRegistered);
                }
                if roles.is_empty() {
                    return Err(UserError::NoRole);
                }
                let event = UserEvent::UserRegistered {
                    user_id,
                    account_id,
                    name: name.as_str().to_owned(),
                    email: email.as_str().to_owned(),
                    password_hash,
                    roles,
                    invitation_id,
                };
                sink.write(event, self).await;
            }
            UserCommand::Deactivate { by } => {
                let user_id = self.id.ok_or(UserError::NotFound)?;
                if !self.active {
                    return Err(UserError::NotActive);
                }
                if by == user_id {
                    return Err(UserError::CannotDeactivateSelf);
                }
                sink.write(UserEvent::UserDeactivated { user_id, by }, self).await;
            }
            UserCommand::ChangePassword { password_hash } => {
                let user_id = self.id.ok_or(UserError::NotFound)?;
                if !self.active {
                    return Err(UserError::NotActive);
                }
                sink.write(UserEvent::PasswordChanged { user_id, password_hash }, self).await;
            }
            UserCommand::UpdateProfile { by, name, display_name, avatar_url, bio } => {
                let user_id = self.id.ok_or(UserError::NotFound)?;
                if !self.active {
                    return Err(UserError::NotActive);
                }
                let name = name.map(|n| n.as_str().to_owned()).filter(|n| *n != self.name);
                let display_name = display_name.filter(|d| *d != self.display_name);
                let avatar_url = avatar_url.filter(|a| *a != self.avatar_url);
                let bio = bio.filter(|b| *b != self.bio);
                if name.is_some() || display_name.is_some() || avatar_url.is_some() || bio.is_some() {
                    let event =
                        UserEvent::UserProfileUpdated { user_id, name, display_name, avatar_url, bio, by };
                    sink.write(event, self).await;
                }
            }
            UserCommand::AssignRoles { mut roles, by } => {
                let user_id = self.id.ok_or(UserError::NotFound)?;
                if !self.active {
                    return Err(UserError::NotActive);
                }
                roles.sort();
                roles.dedup();
                if roles.is_empty() {
                    return Err(UserError::NoRole);
                }
                let mut current = self.roles.clone();
                current.sort();
                if roles != current {
                    sink.write(UserEvent::UserRolesChanged { user_id, roles, by }, self).await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: UserEvent) {
        match event {
            UserEvent::UserRegistered { user_id, account_id, name, email, password_hash, roles, .. } => {
                self.id = Some(user_id);
                self.account_id = Some(account_id);
                self.name = name;
                self.email = email;
                self.password_history = vec![password_hash.clone()];
                self.password_hash = password_hash;
                self.roles = roles;
                self.active = true;
            }
            UserEvent::UserDeactivated { .. } => self.active = false,
            UserEvent::UserRolesChanged { roles, .. } => self.roles = roles,
            UserEvent::PasswordChanged { password_hash, .. } => {
                self.password_history.push(password_hash.clone());
                let excess = self.password_history.len().saturating_sub(PASSWORD_HISTORY);
                self.password_history.drain(..excess);
                self.password_hash = password_hash;
            }
            UserEvent::UserProfileUpdated { name, display_name, avatar_url, bio, .. } => {
                if let Some(name) = name {
                    self.name = name;
                }
                if let Some(display_name) = display_name {
                    self.display_name = display_name;
                }
                if let Some(avatar_url) = avatar_url {
                    self.avatar_url = avatar_url;
                }
                if let Some(bio) = bio {
                    self.bio = bio;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::values::{Email, Name};

    fn register(id: Uuid, roles: Vec<String>) -> UserCommand {
        UserCommand::Register {
            user_id: id,
            account_id: Uuid::nil(),
            name: Name::parse("Alice").unwrap(),
            email: Email::parse("Alice@Example.com").unwrap(),
            password_hash: "$argon2id$x".into(),
            roles,
            invitation_id: None,
        }
    }

    fn registered(id: Uuid) -> UserEvent {
        UserEvent::UserRegistered {
            user_id: id,
            account_id: Uuid::nil(),
            name: "Alice".into(),
            email: "alice@example.com".into(),
            password_hash: "$argon2id$x".into(),
            roles: vec!["owner".into()],
            invitation_id: None,
        }
    }

    #[test]
    fn registering_records_the_normalized_email_and_roles() {
        let id = Uuid::now_v7();
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(register(id, vec!["owner".into()]))
            .then_expect_events(vec![registered(id)]);
    }

    #[test]
    fn a_user_registers_only_once() {
        let id = Uuid::now_v7();
        TestFramework::<User>::with(())
            .given(vec![registered(id)])
            .when(register(id, vec!["owner".into()]))
            .then_expect_error(UserError::AlreadyRegistered);
    }

    #[test]
    fn a_user_without_a_role_is_refused() {
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(register(Uuid::now_v7(), vec![]))
            .then_expect_error(UserError::NoRole);
    }

    #[test]
    fn an_active_user_is_deactivated_once_and_not_by_themself() {
        let id = Uuid::now_v7();
        let admin = Uuid::now_v7();
        TestFramework::<User>::with(())
            .given(vec![registered(id)])
            .when(UserCommand::Deactivate { by: admin })
            .then_expect_events(vec![UserEvent::UserDeactivated { user_id: id, by: admin }]);
        TestFramework::<User>::with(())
            .given(vec![registered(id), UserEvent::UserDeactivated { user_id: id, by: admin }])
            .when(UserCommand::Deactivate { by: admin })
            .then_expect_error(UserError::NotActive);
        TestFramework::<User>::with(())
            .given(vec![registered(id)])
            .when(UserCommand::Deactivate { by: id })
            .then_expect_error(UserError::CannotDeactivateSelf);
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(UserCommand::Deactivate { by: admin })
            .then_expect_error(UserError::NotFound);
    }

    #[test]
    fn roles_change_to_a_non_empty_set_of_known_roles() {
        let id = Uuid::now_v7();
        let by = Uuid::now_v7();
        TestFramework::<User>::with(())
            .given(vec![registered(id)])
            .when(UserCommand::AssignRoles { roles: vec!["admin".into(), "member".into()], by })
            .then_expect_events(vec![UserEvent::UserRolesChanged {
                user_id: id,
                roles: vec!["admin".into(), "member".into()],
                by,
            }]);
        TestFramework::<User>::with(())
            .given(vec![registered(id)])
            .when(UserCommand::AssignRoles { roles: vec![], by })
            .then_expect_error(UserError::NoRole);
        TestFramework::<User>::with(())
            .given(vec![registered(id)])
            .when(UserCommand::AssignRoles { roles: vec!["owner".into()], by })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_profile_update_records_only_what_changes() {
        let id = Uuid::now_v7();
        let update = |name: Option<&str>, bio: Option<Option<&str>>| UserCommand::UpdateProfile {
            by: id,
            name: name.map(|n| crate::values::Name::parse(n).unwrap()),
            display_name: None,
            avatar_url: None,
            bio: bio.map(|b| b.map(str::to_owned)),
        };
        TestFramework::<User>::with(())
            .given(vec![registered(id)])
            .when(update(Some("Alicia"), Some(Some("hi"))))
            .then_expect_events(vec![UserEvent::UserProfileUpdated {
                user_id: id,
                name: Some("Alicia".into()),
                display_name: None,
                avatar_url: None,
                bio: Some(Some("hi".into())),
                by: id,
            }]);
        TestFramework::<User>::with(())
            .given(vec![registered(id)])
            .when(update(Some("Alice"), None))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_password_change_keeps_the_last_five_hashes() {
        let id = Uuid::now_v7();
        let mut given = vec![registered(id)];
        for i in 0..6 {
            given.push(UserEvent::PasswordChanged { user_id: id, password_hash: format!("h{i}") });
        }
        let mut user = User::default();
        for e in given.clone() {
            user.apply(e);
        }
        assert_eq!(
            user.password_history,
            vec!["h1", "h2", "h3", "h4", "h5"],
            "the current hash and four before it"
        );
        assert_eq!(user.password_hash, "h5");
        TestFramework::<User>::with(())
            .given(given)
            .when(UserCommand::ChangePassword { password_hash: "h6".into() })
            .then_expect_events(vec![UserEvent::PasswordChanged { user_id: id, password_hash: "h6".into() }]);
    }

    #[test]
    fn stored_names_are_stable() {
        crate::payload::assert_stored_names(&[
            registered(Uuid::nil()),
            UserEvent::UserDeactivated { user_id: Uuid::nil(), by: Uuid::nil() },
            UserEvent::UserRolesChanged {
                user_id: Uuid::nil(),
                roles: vec!["member".into()],
                by: Uuid::nil(),
            },
            UserEvent::UserProfileUpdated {
                user_id: Uuid::nil(),
                name: Some("n".into()),
                display_name: Some(None),
                avatar_url: None,
                bio: Some(Some("b".into())),
                by: Uuid::nil(),
            },
            UserEvent::PasswordChanged { user_id: Uuid::nil(), password_hash: "h".into() },
        ]);
        assert_eq!(User::TYPE, "User");
    }
}
