use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    #[serde(rename = "UserRegistered")]
    UserRegistered {
        user_id: Uuid,
        account_id: Uuid,
        name: String,
        email: String,
        /// Secret: redacted wherever events are shown.
        password_hash: String,
        roles: Vec<String>,
        #[serde(default)]
        invitation_id: Option<Uuid>,
    },
    #[serde(rename = "UserDeactivated")]
    UserDeactivated { user_id: Uuid, by: Uuid },
    #[serde(rename = "UserRolesChanged")]
    UserRolesChanged { user_id: Uuid, roles: Vec<String>, by: Uuid },
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            UserEvent::UserRegistered { .. } => "UserRegistered".into(),
            UserEvent::UserDeactivated { .. } => "UserDeactivated".into(),
            UserEvent::UserRolesChanged { .. } => "UserRolesChanged".into(),
        }
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}
