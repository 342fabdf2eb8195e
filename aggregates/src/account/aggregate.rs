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
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("the account is already open")]
    AlreadyOpen,
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
        }
        Ok(())
    }

    fn apply(&mut self, event: AccountEvent) {
        match event {
            AccountEvent::AccountOpened { account_id, name, owner_id } => {
                self.id = Some(account_id);
                self.name = name;
                self.owner_id = Some(owner_id);
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
    fn stored_names_are_stable() {
        crate::payload::assert_stored_names(&[opened(Uuid::nil(), Uuid::nil())]);
        assert_eq!(Account::TYPE, "Account");
    }
}
