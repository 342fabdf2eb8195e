//! Custom roles: created, assigned, changed and deleted, taking effect on their holders' very
//! next request; system roles immutable; nobody grants what they do not hold.

use parley_tests::server::{Answer, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

async fn call(s: &TestServer, method: Method, path: &str, token: &str, body: Option<Value>) -> Answer {
    s.call(method, path, Some(token), body, &[]).await
}

async fn my_permissions(s: &TestServer, token: &str) -> Vec<String> {
    let me = s.get("/api/v1/users/me", token).await;
    assert_eq!(me.status, 200, "{:?}", me.body);
    me.data()["permissions"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_roles_grant_their_permissions_at_once_and_stop_when_changed_or_deleted() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let member = s.invite_member(&owner, "member@example.com").await;

    // Bad roles are refused and write nothing.
    let before = s.events().await;
    let bad = [
        (json!({"name": "Admin", "permissions": []}), 422),
        (json!({"name": "Support", "permissions": ["users.fly"]}), 422),
        (json!({"name": "", "permissions": []}), 422),
        (json!({"name": "Support"}), 422),
    ];
    for (body, status) in bad {
        let a = s.post("/api/v1/roles", &owner.token, body.clone()).await;
        assert_eq!(a.status.as_u16(), status, "{body}: {:?}", a.body);
    }
    let refused = s.post("/api/v1/roles", &member.token, json!({"name": "Mine", "permissions": []})).await;
    refused.assert_error(403, "forbidden");
    assert_eq!(s.events().await, before, "nothing written");

    let created = s
        .post(
            "/api/v1/roles",
            &owner.token,
            json!({"name": "Support", "permissions": ["roles.manage", "audit.view", "users.view"]}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let role_id = created.data()["id"].as_str().unwrap().to_owned();
    assert_eq!(created.data()["permissions"], json!(["users.view", "roles.manage", "audit.view"]));
    let taken = s.post("/api/v1/roles", &owner.token, json!({"name": "support", "permissions": []})).await;
    taken.assert_error(409, "conflict");

    // Listed beside the system roles.
    let roles = s.get_at("/api/v1/roles", &member.token, &created.position()).await;
    let names: Vec<&str> =
        roles.data().as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["owner", "admin", "member", "Support"]);
    let system_id = roles.data()[0]["id"].as_str().unwrap().to_owned();
    for method in [Method::PATCH, Method::DELETE] {
        let a = call(
            &s,
            method,
            &format!("/api/v1/roles/{system_id}"),
            &owner.token,
            Some(json!({"name": "boss"})),
        )
        .await;
        a.assert_error(403, "forbidden");
    }

    // Assigned by name: the member's old token must refresh, the new one carries the role.
    let audit = "/api/v1/audit/events?limit=5";
    assert_eq!(s.get(audit, &member.token).await.status, 403);
    let assigned = call(
        &s,
        Method::PUT,
        &format!("/api/v1/users/{}/roles", member.id),
        &owner.token,
        Some(json!({"roles": ["member", "Support"]})),
    )
    .await;
    assert_eq!(assigned.status, 200, "{:?}", assigned.body);
    let mut held: Vec<&str> =
        assigned.data()["roles"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    held.sort();
    assert_eq!(held, [role_id.as_str(), "member"], "a custom role is held by its id");
    let unknown = call(
        &s,
        Method::PUT,
        &format!("/api/v1/users/{}/roles", member.id),
        &owner.token,
        Some(json!({"roles": ["Nonexistent"]})),
    )
    .await;
    unknown.assert_error(422, "validation_failed");
    let token = s.login("member@example.com").await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(s.get(audit, &token).await.status, 200);
    assert!(my_permissions(&s, &token).await.contains(&"audit.view".to_owned()));

    // The holder grants nothing they do not hold.
    let escalate =
        s.post("/api/v1/roles", &token, json!({"name": "Escalate", "permissions": ["users.manage"]})).await;
    escalate.assert_error(403, "forbidden");

    // A change applies to the same token at once; If-Match guards it.
    let path = format!("/api/v1/roles/{role_id}");
    let stale = s
        .call(
            Method::PATCH,
            &path,
            Some(&owner.token),
            Some(json!({"permissions": ["users.view"]})),
            &[("if-match", "\"7\"")],
        )
        .await;
    stale.assert_error(412, "precondition_failed");
    let changed = s
        .call(
            Method::PATCH,
            &path,
            Some(&owner.token),
            Some(json!({"name": "Helpdesk", "permissions": ["users.view"]})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(changed.status, 200, "{:?}", changed.body);
    assert_eq!(changed.header("etag"), Some("\"2\""));
    assert_eq!(s.get(audit, &token).await.status, 403, "the permission is gone from the same token");
    let permissions = my_permissions(&s, &token).await;
    assert!(
        permissions.contains(&"users.view".to_owned()) && !permissions.contains(&"audit.view".to_owned())
    );

    // Deleted: its holders lose it; its name taken again grants them nothing.
    let deleted = call(&s, Method::DELETE, &path, &owner.token, None).await;
    assert_eq!(deleted.status, 204, "{:?}", deleted.body);
    let again = s
        .post("/api/v1/roles", &owner.token, json!({"name": "Helpdesk", "permissions": ["audit.view"]}))
        .await;
    assert_eq!(again.status, 201, "{:?}", again.body);
    assert_eq!(
        my_permissions(&s, &token).await,
        ["users.view", "conversations.create", "calls.start"].map(String::from)
    );
    assert_eq!(s.get(audit, &token).await.status, 403);
    call(&s, Method::DELETE, &path, &owner.token, None).await.assert_error(404, "not_found");

    // Every change is in the audit log, by its actor.
    let log =
        s.get_at("/api/v1/audit/events?stream_type=Role&limit=100", &owner.token, &again.position()).await;
    let seen: Vec<(&str, &str)> = log
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["event_type"].as_str().unwrap(), e["metadata"]["actor_id"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        seen,
        [
            ("RoleCreated", owner.id.as_str()),
            ("RoleUpdated", owner.id.as_str()),
            ("RoleDeleted", owner.id.as_str()),
            ("RoleCreated", owner.id.as_str())
        ]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_gives_a_role_that_grants_more_than_they_hold_and_invitations_take_custom_roles() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let admin = s.invite_as(&owner, "admin@example.com", "admin").await;
    let member = s.invite_member(&owner, "member@example.com").await;
    // The owner made a role that carries account.manage, and one within an admin's reach.
    let vault = s
        .post("/api/v1/roles", &owner.token, json!({"name": "Vault", "permissions": ["account.manage"]}))
        .await;
    assert_eq!(vault.status, 201, "{:?}", vault.body);
    let support = s
        .post("/api/v1/roles", &owner.token, json!({"name": "Support", "permissions": ["audit.view"]}))
        .await;
    let support_id = support.data()["id"].as_str().unwrap().to_owned();

    // An admin (users.manage, not account.manage) cannot hand out Vault: not to others, not to
    // themself, not through an invitation.
    let before = s.events().await;
    for user in [&member.id, &admin.id] {
        let a = call(
            &s,
            Method::PUT,
            &format!("/api/v1/users/{user}/roles"),
            &admin.token,
            Some(json!({"roles": ["admin", "Vault"]})),
        )
        .await;
        a.assert_error(403, "forbidden");
    }
    let invite =
        s.post("/api/v1/invitations", &admin.token, json!({"email": "x@example.com", "role": "Vault"})).await;
    invite.assert_error(403, "forbidden");
    let unknown =
        s.post("/api/v1/invitations", &admin.token, json!({"email": "x@example.com", "role": "Nope"})).await;
    unknown.assert_error(422, "validation_failed");
    assert!(
        unknown.body["details"]["role"][0].as_str().is_some_and(|m| m.contains("Nope")),
        "{:?}",
        unknown.body
    );
    assert_eq!(s.events().await, before, "nothing written");

    // A role the owner gave stays when an admin changes the user's other roles.
    let given = call(
        &s,
        Method::PUT,
        &format!("/api/v1/users/{}/roles", member.id),
        &owner.token,
        Some(json!({"roles": ["member", "Vault"]})),
    )
    .await;
    assert_eq!(given.status, 200, "{:?}", given.body);
    let kept = call(
        &s,
        Method::PUT,
        &format!("/api/v1/users/{}/roles", member.id),
        &admin.token,
        Some(json!({"roles": ["Vault", "Support"]})),
    )
    .await;
    assert_eq!(kept.status, 200, "{:?}", kept.body);

    // Invited with a custom role (by name): the new user holds it by id.
    let supporter = s.invite_as(&admin, "support@example.com", "Support").await;
    let me = s.get_at("/api/v1/users/me", &supporter.token, &supporter.position).await;
    assert_eq!(me.data()["roles"], json!([support_id]));
    assert!(my_permissions(&s, &supporter.token).await.contains(&"audit.view".to_owned()));
    s.stop().await;
}
