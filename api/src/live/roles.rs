//! Custom roles' permissions, in memory: a request's permissions are resolved from its token's
//! roles without a database round trip. Fed like every follower ([`super::follow`]): every role
//! event at start, then the live feed; this node's own changes at their commit.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use cqrs_es::Aggregate;
use parley_aggregates::catalog::EventTypes;
use parley_aggregates::from_payload;
use parley_aggregates::permissions::{permissions_of, Permission};
use parley_aggregates::role::{Role, RoleEvent};
use parley_eventstore::{EventFilter, EventStore, RecordedEvent, StoreError};
use uuid::Uuid;

use super::follow::FollowsLog;

/// A live custom role: its account, its permissions, the version of its stream they are from.
#[derive(Clone, Debug)]
struct Known {
    account_id: Uuid,
    permissions: Vec<Permission>,
    version: i64,
    deleted: bool,
}

#[derive(Clone, Default)]
pub struct RoleDirectory {
    roles: Arc<RwLock<HashMap<Uuid, Known>>>,
}

impl RoleDirectory {
    /// The event types it takes note of.
    pub fn wants(event_type: &str) -> bool {
        RoleEvent::TYPES.contains(&event_type)
    }

    /// Every role event (roles are few, and each change is small).
    async fn load_all(&self, store: &EventStore) -> Result<(), StoreError> {
        let mut filter = EventFilter { stream_type: Some(Role::TYPE.into()), ..Default::default() };
        loop {
            let page = store.query(&filter, 1000).await?;
            let Some(last) = page.last() else { return Ok(()) };
            filter.after = last.cursor();
            for event in &page {
                self.observe(event);
            }
        }
    }

    fn remember(&self, role_id: Uuid, known: Known) {
        let Ok(mut roles) = self.roles.write() else { return };
        if roles.get(&role_id).is_none_or(|k| k.version < known.version) {
            roles.insert(role_id, known);
        }
    }

    /// Takes note of a role event; older news than what is known is ignored.
    pub fn observe(&self, event: &RecordedEvent) {
        if event.stream_type != Role::TYPE {
            return;
        }
        let Ok(e) = from_payload::<RoleEvent>(&event.event_type, &event.payload) else { return };
        let (role_id, known) = match e {
            RoleEvent::RoleCreated { role_id, account_id, permissions, .. }
            | RoleEvent::RoleUpdated { role_id, account_id, permissions, .. } => {
                (role_id, Known { account_id, permissions, version: event.version, deleted: false })
            }
            RoleEvent::RoleDeleted { role_id, account_id, .. } => (
                role_id,
                Known { account_id, permissions: Vec::new(), version: event.version, deleted: true },
            ),
        };
        self.remember(role_id, known);
    }

    /// The permissions `roles` grant in `account`: the system roles', and those of its live
    /// custom roles (held by id).
    pub fn permissions(&self, account_id: Uuid, roles: &[String]) -> Vec<Permission> {
        let mut out = permissions_of(roles);
        if roles.iter().any(|r| r.parse::<Uuid>().is_ok()) {
            if let Ok(known) = self.roles.read() {
                for id in roles.iter().filter_map(|r| r.parse::<Uuid>().ok()) {
                    if let Some(k) = known.get(&id).filter(|k| k.account_id == account_id && !k.deleted) {
                        out.extend(&k.permissions);
                    }
                }
            }
            out.sort();
            out.dedup();
        }
        out
    }
}

impl FollowsLog for RoleDirectory {
    const WHAT: &'static str = "roles";

    async fn load(&self, store: &EventStore) -> Result<(), StoreError> {
        self.load_all(store).await
    }

    fn observe(&self, event: &Arc<RecordedEvent>) {
        RoleDirectory::observe(self, event);
    }
}
