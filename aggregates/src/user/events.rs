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
    #[serde(rename = "PasswordChanged")]
    PasswordChanged {
        user_id: Uuid,
        /// Secret: redacted wherever events are shown.
        password_hash: String,
    },
    /// Only the fields that changed are present; an inner `null` clears the field.
    #[serde(rename = "UserProfileUpdated")]
    UserProfileUpdated {
        user_id: Uuid,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none", with = "double_option")]
        display_name: Option<Option<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none", with = "double_option")]
        avatar_url: Option<Option<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none", with = "double_option")]
        bio: Option<Option<String>>,
        by: Uuid,
    },
}

/// `Option<Option<T>>` as JSON: absent, `null`, or a value.
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        value: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

impl crate::catalog::EventTypes for UserEvent {
    const TYPES: &'static [&'static str] =
        &["UserRegistered", "UserDeactivated", "UserRolesChanged", "UserProfileUpdated", "PasswordChanged"];
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            UserEvent::UserRegistered { .. } => "UserRegistered".into(),
            UserEvent::UserDeactivated { .. } => "UserDeactivated".into(),
            UserEvent::UserRolesChanged { .. } => "UserRolesChanged".into(),
            UserEvent::UserProfileUpdated { .. } => "UserProfileUpdated".into(),
            UserEvent::PasswordChanged { .. } => "PasswordChanged".into(),
        }
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}
