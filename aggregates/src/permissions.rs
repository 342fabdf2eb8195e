//! The permission registry and the system roles (API.md, "Users, roles, permissions").

use serde::{Deserialize, Serialize};

/// A permission, by its stored name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    #[serde(rename = "account.manage")]
    AccountManage,
    #[serde(rename = "users.view")]
    UsersView,
    #[serde(rename = "users.manage")]
    UsersManage,
    #[serde(rename = "users.invite")]
    UsersInvite,
    #[serde(rename = "roles.manage")]
    RolesManage,
    #[serde(rename = "conversations.create")]
    ConversationsCreate,
    #[serde(rename = "conversations.manage")]
    ConversationsManage,
    #[serde(rename = "messages.moderate")]
    MessagesModerate,
    #[serde(rename = "calls.start")]
    CallsStart,
    #[serde(rename = "audit.view")]
    AuditView,
    #[serde(rename = "analytics.view")]
    AnalyticsView,
    #[serde(rename = "analytics.export_pii")]
    AnalyticsExportPii,
    #[serde(rename = "api_keys.manage")]
    ApiKeysManage,
    #[serde(rename = "webhooks.manage")]
    WebhooksManage,
    #[serde(rename = "projections.manage")]
    ProjectionsManage,
    #[serde(rename = "jobs.manage")]
    JobsManage,
    #[serde(rename = "spaces.manage")]
    SpacesManage,
}

use Permission::*;

/// Every permission with its description, in registry order.
pub const REGISTRY: &[(Permission, &str, &str)] = &[
    (AccountManage, "account.manage", "Manage the account itself"),
    (UsersView, "users.view", "See the account's users"),
    (UsersManage, "users.manage", "Change users' profiles and roles, deactivate users"),
    (UsersInvite, "users.invite", "Invite people to the account"),
    (RolesManage, "roles.manage", "Create and change custom roles"),
    (ConversationsCreate, "conversations.create", "Start conversations"),
    (ConversationsManage, "conversations.manage", "Archive any conversation"),
    (MessagesModerate, "messages.moderate", "Delete any message"),
    (CallsStart, "calls.start", "Start calls"),
    (AuditView, "audit.view", "Read the audit log"),
    (AnalyticsView, "analytics.view", "Read analytics"),
    (
        AnalyticsExportPii,
        "analytics.export_pii",
        "See who the analytics' active users are (names and emails)",
    ),
    (ApiKeysManage, "api_keys.manage", "Create and revoke API keys"),
    (WebhooksManage, "webhooks.manage", "Manage outgoing webhooks"),
    (ProjectionsManage, "projections.manage", "Inspect and rebuild projections"),
    (JobsManage, "jobs.manage", "Inspect the job queue, retry and discard jobs"),
    (
        SpacesManage,
        "spaces.manage",
        "Create and change spaces, experiences and streams; grant access; host streams",
    ),
];

impl Permission {
    pub fn name(self) -> &'static str {
        REGISTRY.iter().find(|(p, _, _)| *p == self).map(|(_, n, _)| *n).unwrap_or("unknown")
    }

    pub fn parse(name: &str) -> Option<Self> {
        REGISTRY.iter().find(|(_, n, _)| *n == name).map(|(p, _, _)| *p)
    }
}

pub const OWNER: &str = "owner";
pub const ADMIN: &str = "admin";
pub const MEMBER: &str = "member";

/// The permissions of a system role; `None` for a role that is not a system role.
pub fn system_role(name: &str) -> Option<Vec<Permission>> {
    let all = REGISTRY.iter().map(|(p, _, _)| *p);
    match name {
        OWNER => Some(all.collect()),
        ADMIN => Some(all.filter(|p| !matches!(p, AccountManage | AnalyticsExportPii)).collect()),
        MEMBER => Some(vec![UsersView, ConversationsCreate, CallsStart]),
        _ => None,
    }
}

/// The union of the permissions of `roles` (system roles only; custom roles come later).
pub fn permissions_of(roles: &[String]) -> Vec<Permission> {
    let mut out: Vec<Permission> = roles.iter().filter_map(|r| system_role(r)).flatten().collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for (p, name, _) in REGISTRY {
            assert_eq!(p.name(), *name);
            assert_eq!(Permission::parse(name), Some(*p));
            assert_eq!(serde_json::to_value(p).ok(), Some(serde_json::json!(name)));
        }
    }

    #[test]
    fn system_roles_grant_what_the_contract_says() {
        assert_eq!(permissions_of(&[OWNER.into()]).len(), REGISTRY.len());
        let admin = permissions_of(&[ADMIN.into()]);
        assert!(!admin.contains(&AccountManage) && !admin.contains(&AnalyticsExportPii));
        assert_eq!(admin.len(), REGISTRY.len() - 2);
        assert_eq!(permissions_of(&[MEMBER.into()]), vec![UsersView, ConversationsCreate, CallsStart]);
        assert!(permissions_of(&["custom".into()]).is_empty());
    }
}
