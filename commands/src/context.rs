//! Who is acting, for whom, and why: carried by every command into its events' metadata.

use parley_aggregates::permissions::Permission;
use parley_eventstore::{ActorKind, Metadata};
use uuid::Uuid;

use crate::error::DispatchError;

/// The credential behind a command, with the permissions it carries.
#[derive(Clone, Debug, PartialEq)]
pub struct Actor {
    pub kind: ActorKind,
    /// The user or API key; `None` for the system.
    pub id: Option<Uuid>,
    pub permissions: Vec<Permission>,
}

impl Actor {
    pub fn user(id: Uuid, permissions: Vec<Permission>) -> Self {
        Self { kind: ActorKind::User, id: Some(id), permissions }
    }

    pub fn api_key(id: Uuid, permissions: Vec<Permission>) -> Self {
        Self { kind: ActorKind::ApiKey, id: Some(id), permissions }
    }

    /// An incoming webhook posting through its hook: it may do only what the hook is for.
    pub fn webhook(hook_id: Uuid) -> Self {
        Self { kind: ActorKind::Webhook, id: Some(hook_id), permissions: Vec::new() }
    }

    pub fn system() -> Self {
        Self { kind: ActorKind::System, id: None, permissions: Vec::new() }
    }

    pub fn can(&self, permission: Permission) -> bool {
        self.kind == ActorKind::System || self.permissions.contains(&permission)
    }
}

/// Everything a command needs besides its own fields. The account comes from the credential,
/// never from the request.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandContext {
    pub account_id: Uuid,
    pub actor: Actor,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
}

impl CommandContext {
    pub fn new(account_id: Uuid, actor: Actor) -> Self {
        Self {
            account_id,
            actor,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            request_id: None,
            client_ip: None,
        }
    }

    /// The acting user; commands only users can give fail for other actors.
    pub fn user_id(&self) -> Result<Uuid, DispatchError> {
        match (self.actor.kind, self.actor.id) {
            (ActorKind::User, Some(id)) => Ok(id),
            _ => Err(DispatchError::Forbidden("only a user can do this".into())),
        }
    }

    /// The acting user or API key, as recorded in `*_by` fields; the system has no id.
    pub fn actor_id(&self) -> Result<Uuid, DispatchError> {
        match (self.actor.kind, self.actor.id) {
            (ActorKind::User | ActorKind::ApiKey, Some(id)) => Ok(id),
            _ => Err(DispatchError::Forbidden("only a user or an API key can do this".into())),
        }
    }

    /// Fails unless the actor holds `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), DispatchError> {
        if self.actor.can(permission) {
            Ok(())
        } else {
            Err(DispatchError::Forbidden(format!("missing permission {}", permission.name())))
        }
    }

    pub fn metadata(&self) -> Metadata {
        Metadata {
            actor_type: self.actor.kind,
            actor_id: self.actor.id,
            correlation_id: Some(self.correlation_id),
            causation_id: self.causation_id,
            request_id: self.request_id.clone(),
            client_ip: self.client_ip.clone(),
        }
    }
}
