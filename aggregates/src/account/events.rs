use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    #[serde(rename = "AccountOpened")]
    AccountOpened { account_id: Uuid, name: String, owner_id: Uuid },
    #[serde(rename = "OwnerAdded")]
    OwnerAdded { account_id: Uuid, user_id: Uuid },
    #[serde(rename = "OwnerRemoved")]
    OwnerRemoved { account_id: Uuid, user_id: Uuid },
}

impl crate::catalog::EventTypes for AccountEvent {
    const TYPES: &'static [&'static str] = &["AccountOpened", "OwnerAdded", "OwnerRemoved"];
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        match self {
            AccountEvent::AccountOpened { .. } => "AccountOpened".into(),
            AccountEvent::OwnerAdded { .. } => "OwnerAdded".into(),
            AccountEvent::OwnerRemoved { .. } => "OwnerRemoved".into(),
        }
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}
