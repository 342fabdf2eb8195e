use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AccountCommand, AccountEvent};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub id: Option<Uuid>,
    pub name: String,
    pub owner_id: Option<Uuid>,
    /// Every owner: bounded by the account's owners, not its history.
    #[serde(default)]
    pub owners: std::collections::BTreeSet<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the account does not exist")]
    NotFound,
    #[error("the last owner of an account cannot stop being one")]
    LastOwner,
}

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;
    type Services = ();

    async fn handle(
        &mut self,
        command: AccountCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), AccountError> {
        match command {
            AccountCommand::Open { account_id, name, owner_id } => {
                if self.id.is_some() {
                    return Err(AccountError::AlreadyOpen);
                }
                let event =
                    AccountEvent::AccountOpened { account_id, name: name.as_str().to_owned(), owner_id };
                sink.write(event, self).await;
            }
            AccountCommand::SetOwner { user_id, owner } => {
                let account_id = self.id.ok_or(AccountError::NotFound)?;
                match (owner, self.owners.contains(&user_id)) {
                    (true, false) => sink.write(AccountEvent::OwnerAdded { account_id, user_id }, self).await,
                    (false, true) if self.owners.len() == 1 => return Err(AccountError::LastOwner),
                    (false, true) => {
                        sink.write(AccountEvent::OwnerRemoved { account_id, user_id }, self).await
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: AccountEvent) {
        match event {
            AccountEvent::AccountOpened { account_id, name, owner_id } => {
                self.id = Some(account_id);
                self.name = name;
                self.owner_id = Some(owner_id);
                self.owners.insert(owner_id);
            }
            AccountEvent::OwnerAdded { user_id, .. } => {
                self.owners.insert(user_id);
            }
            AccountEvent::OwnerRemoved { user_id, .. } => {
                self.owners.remove(&user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::values::Name;

    fn opened(id: Uuid, owner: Uuid) -> AccountEvent {
        AccountEvent::AccountOpened { account_id: id, name: "Acme".into(), owner_id: owner }
    }

    #[test]
    fn opening_an_account_records_its_owner() {
        let (id, owner) = (Uuid::now_v7(), Uuid::now_v7());
        TestFramework::<Account>::with(())
            .given_no_previous_events()
            .when(AccountCommand::Open {
                account_id: id,
                name: Name::parse("Acme").unwrap(),
                owner_id: owner,
            })
            .then_expect_events(vec![opened(id, owner)]);
    }

    #[test]
    fn an_account_opens_only_once() {
        let (id, owner) = (Uuid::now_v7(), Uuid::now_v7());
        TestFramework::<Account>::with(())
            .given(vec![opened(id, owner)])
            .when(AccountCommand::Open {
                account_id: id,
                name: Name::parse("Acme").unwrap(),
                owner_id: owner,
            })
            .then_expect_error(AccountError::AlreadyOpen);
    }

    #[test]
    fn owners_are_added_and_removed_but_never_the_last_one() {
        let (id, owner, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        TestFramework::<Account>::with(())
            .given(vec![opened(id, owner)])
            .when(AccountCommand::SetOwner { user_id: other, owner: true })
            .then_expect_events(vec![AccountEvent::OwnerAdded { account_id: id, user_id: other }]);
        TestFramework::<Account>::with(())
            .given(vec![opened(id, owner)])
            .when(AccountCommand::SetOwner { user_id: owner, owner: false })
            .then_expect_error(AccountError::LastOwner);
        TestFramework::<Account>::with(())
            .given(vec![opened(id, owner), AccountEvent::OwnerAdded { account_id: id, user_id: other }])
            .when(AccountCommand::SetOwner { user_id: owner, owner: false })
            .then_expect_events(vec![AccountEvent::OwnerRemoved { account_id: id, user_id: owner }]);
    }

    #[test]
    fn setting_what_already_holds_changes_nothing() {
        let (id, owner, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        TestFramework::<Account>::with(())
            .given(vec![opened(id, owner)])
            .when(AccountCommand::SetOwner { user_id: owner, owner: true })
            .then_expect_events(vec![]);
        TestFramework::<Account>::with(())
            .given(vec![opened(id, owner)])
            .when(AccountCommand::SetOwner { user_id: other, owner: false })
            .then_expect_events(vec![]);
    }

    #[test]
    fn stored_names_are_stable() {
        let n = Uuid::nil();
        crate::payload::assert_stored_names(&[
            opened(n, n),
            AccountEvent::OwnerAdded { account_id: n, user_id: n },
            AccountEvent::OwnerRemoved { account_id: n, user_id: n },
        ]);
        assert_eq!(Account::TYPE, "Account");
    }
}
