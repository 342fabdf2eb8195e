//! Managing the users of an account over HTTP: listing and search, profiles with If-Match,
//! passwords, role changes (and the last owner), invitations.

use parley_tests::server::TestServer;
use reqwest::Method;
use serde_json::{json, Value};

async fn put_roles(s: &TestServer, token: &str, user: &str, roles: Value) -> parley_tests::server::Answer {
    s.call(
        Method::PUT,
        &format!("/api/v1/users/{user}/roles"),
        Some(token),
        Some(json!({"roles": roles})),
        &[],
    )
    .await
}

#[tokio::test]
async fn roles_change_by_managers_only_the_last_owner_stays_and_older_tokens_must_refresh() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let bob = s.invite_member(&owner, "bob@example.com").await;
    let bob_session = s.login("bob@example.com").await;
    let count = s.events().await;
    put_roles(&s, &bob.token, &owner.id, json!(["member"])).await.assert_error(403, "forbidden");
    put_roles(&s, &owner.token, &owner.id, json!(["admin"])).await.assert_error(409, "conflict");
    put_roles(&s, &owner.token, &bob.id, json!(["emperor"])).await.assert_error(422, "validation_failed");
    put_roles(&s, &owner.token, &bob.id, json!([])).await.assert_error(422, "validation_failed");
    assert_eq!(s.events().await, count, "refusals write nothing");

    let promoted = put_roles(&s, &owner.token, &bob.id, json!(["admin"])).await;
    assert_eq!(promoted.status, 200, "{:?}", promoted.body);
    assert_eq!(promoted.data()["roles"], json!(["admin"]));
    // Bob's tokens carry his old roles: refused until he refreshes.
    s.get("/api/v1/audit/events", &bob.token).await.assert_error(401, "unauthorized");
    let refreshed = s
        .call(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": bob_session["refresh_token"]})),
            &[],
        )
        .await;
    assert_eq!(refreshed.status, 200, "{:?}", refreshed.body);
    let admin_token = refreshed.data()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(s.get("/api/v1/audit/events", &admin_token).await.status, 200, "an admin reads the audit log");
    // An admin manages users but not owners.
    put_roles(&s, &admin_token, &owner.id, json!(["member"])).await.assert_error(403, "forbidden");
    put_roles(&s, &admin_token, &bob.id, json!(["owner"])).await.assert_error(403, "forbidden");
    // With a second owner, the first may step down.
    assert_eq!(put_roles(&s, &owner.token, &bob.id, json!(["owner"])).await.status, 200);
    let stepped_down = put_roles(&s, &owner.token, &owner.id, json!(["admin"])).await;
    assert_eq!(stepped_down.status, 200, "{:?}", stepped_down.body);
    // Everyone's roles changed since their tokens were issued: both must sign in again.
    s.get("/api/v1/users/me", &admin_token).await.assert_error(401, "unauthorized");
    s.get("/api/v1/users/me", &owner.token).await.assert_error(401, "unauthorized");
    let reader = s.login("owner@example.com").await["access_token"].as_str().unwrap().to_owned();
    let audit =
        s.get_at("/api/v1/audit/events?event_type=UserRolesChanged", &reader, &stepped_down.position()).await;
    let actors: Vec<&Value> =
        audit.data().as_array().unwrap().iter().map(|e| &e["metadata"]["actor_id"]).collect();
    assert_eq!(
        actors,
        vec![&json!(owner.id), &json!(owner.id), &json!(owner.id)],
        "the audit log names who did it"
    );
    let owners =
        s.get_at("/api/v1/audit/events?stream_type=Account", &reader, &stepped_down.position()).await;
    let kinds: Vec<&Value> = owners.data().as_array().unwrap().iter().map(|e| &e["event_type"]).collect();
    assert_eq!(kinds, vec!["AccountOpened", "OwnerAdded", "OwnerRemoved"]);
    s.stop().await;
}

#[tokio::test]
async fn users_are_listed_by_page_searched_by_prefix_and_shown_without_email() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let mut last = String::new();
    for name in ["alice", "alina", "bob", "al_x"] {
        let u = s.invite_member(&owner, &format!("{name}@example.com")).await;
        last = u.position;
    }
    let stranger = s.register("alfred@elsewhere.com").await;
    let page = s.get_at("/api/v1/users?per_page=2&page=1", &owner.token, &last).await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    assert_eq!(
        page.body["meta"]["pagination"],
        json!({"page": 1, "per_page": 2, "total": 5, "total_pages": 3})
    );
    assert_eq!(page.data().as_array().unwrap().len(), 2);
    let found = s.get_at("/api/v1/users?search=AL", &owner.token, &last).await;
    let emails: Vec<&str> =
        found.data().as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap()).collect();
    assert_eq!(emails.len(), 3, "{emails:?}: alice, alina, al_x; not the other account's alfred");
    let literal = s.get_at("/api/v1/users?search=al_", &owner.token, &last).await;
    assert_eq!(literal.data().as_array().unwrap().len(), 1, "`_` is taken literally");
    let by_email = s.get_at("/api/v1/users?search=bob@", &owner.token, &last).await;
    assert_eq!(by_email.data().as_array().unwrap().len(), 1);
    s.get("/api/v1/users?page=0", &owner.token).await.assert_error(400, "bad_request");
    s.get("/api/v1/users?per_page=lots", &owner.token).await.assert_error(400, "bad_request");

    let bob_id = by_email.data()[0]["id"].as_str().unwrap().to_owned();
    let profile = s.get_at(&format!("/api/v1/users/{bob_id}"), &owner.token, &last).await;
    assert_eq!(profile.status, 200);
    assert!(profile.data().get("email").is_none(), "a public profile has no email");
    assert_eq!(profile.header("etag"), Some("\"1\""));
    s.get(&format!("/api/v1/users/{bob_id}"), &stranger.token).await.assert_error(404, "not_found");
    s.get("/api/v1/users/not-a-uuid", &owner.token).await.assert_error(404, "not_found");
    s.stop().await;
}

#[tokio::test]
async fn profiles_change_with_if_match_and_a_stale_version_is_refused() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let bob = s.invite_member(&owner, "bob@example.com").await;
    let stranger = s.register("stranger@example.com").await;
    let patch = |token: &str, user: &str, body: Value, if_match: Option<&str>| {
        let mut req = s.http.patch(format!("{}/api/v1/users/{user}", s.base)).bearer_auth(token).json(&body);
        if let Some(m) = if_match {
            req = req.header("if-match", m);
        }
        req.send()
    };
    let updated = patch(&bob.token, &bob.id, json!({"bio": "hello", "display_name": "Bobby"}), Some("\"1\""))
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    assert_eq!(updated.headers()["etag"], "\"2\"");
    let position = updated.headers()["x-position"].to_str().unwrap().to_owned();
    let body: Value = updated.json().await.unwrap();
    assert_eq!((body["data"]["bio"].clone(), body["data"]["version"].clone()), (json!("hello"), json!(2)));

    let count = s.events().await;
    let stale = patch(&bob.token, &bob.id, json!({"bio": "lost update"}), Some("\"1\"")).await.unwrap();
    assert_eq!(stale.status(), 412);
    let stale: Value = stale.json().await.unwrap();
    assert_eq!(
        (stale["code"].clone(), stale["details"]["version"].clone()),
        (json!("precondition_failed"), json!(2))
    );
    for (token, user, body, if_match, status) in [
        (&bob.token, &owner.id, json!({"bio": "x"}), None, 403),
        (&bob.token, &bob.id, json!({"name": null}), None, 422),
        (&bob.token, &bob.id, json!({"avatar_url": "javascript:alert(1)"}), None, 422),
        (&bob.token, &bob.id, json!({"bio": 42}), None, 422),
        (&bob.token, &bob.id, json!({"bio": "x"}), Some("version one"), 400),
        (&stranger.token, &bob.id, json!({"bio": "x"}), None, 404),
    ] {
        let a = patch(token, user, body.clone(), if_match).await.unwrap();
        assert_eq!(a.status(), status, "{body} {if_match:?}");
    }
    assert_eq!(s.events().await, count, "refusals write nothing");

    let cleared = patch(&owner.token, &bob.id, json!({"bio": null}), Some("*")).await.unwrap();
    assert_eq!(cleared.status(), 200, "a manager may change another's profile");
    let position2 = cleared.headers()["x-position"].to_str().unwrap().to_owned();
    let profile = s.get_at(&format!("/api/v1/users/{}", bob.id), &owner.token, &position2).await;
    assert_eq!(profile.data()["bio"], json!(null));
    assert_eq!(profile.data()["display_name"], json!("Bobby"));
    assert_eq!(profile.header("etag"), Some("\"3\""), "the read model's version is the resource's");
    let me = s.get_at("/api/v1/users/me", &bob.token, &position).await;
    assert_eq!(me.data()["display_name"], json!("Bobby"));
    s.stop().await;
}

#[tokio::test]
async fn a_password_changes_to_one_not_among_the_last_five() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let bob = s.invite_member(&owner, "bob@example.com").await;
    let put_password = |token: &str, user: &str, current: &str, new: &str| {
        s.http
            .put(format!("{}/api/v1/users/{user}/password", s.base))
            .bearer_auth(token)
            .json(&json!({"current_password": current, "new_password": new}))
            .send()
    };
    let original = "correct horse battery";
    let count = s.events().await;
    assert_eq!(
        put_password(&owner.token, &bob.id, original, "a brand new password").await.unwrap().status(),
        403
    );
    let wrong =
        put_password(&owner.token, &owner.id, "not my password", "a brand new password").await.unwrap();
    assert_eq!(wrong.status(), 422);
    assert_eq!(wrong.json::<Value>().await.unwrap()["details"]["current_password"], json!(["is incorrect"]));
    let same = put_password(&owner.token, &owner.id, original, original).await.unwrap();
    assert_eq!(same.json::<Value>().await.unwrap()["details"]["new_password"], json!(["was used recently"]));
    assert_eq!(put_password(&owner.token, &owner.id, original, "short").await.unwrap().status(), 422);
    assert_eq!(s.events().await, count, "refusals write nothing");

    // Five changes: the original then falls out of the history and may be used again.
    let mut current = original.to_owned();
    for i in 1..=5 {
        let next = format!("password number {i}");
        let a = put_password(&owner.token, &owner.id, &current, &next).await.unwrap();
        assert_eq!(a.status(), 204);
        current = next;
    }
    let recent = put_password(&owner.token, &owner.id, &current, "password number 2").await.unwrap();
    assert_eq!(recent.status(), 422, "one of the last five");
    let back = put_password(&owner.token, &owner.id, &current, original).await.unwrap();
    assert_eq!(back.status(), 204, "six changes ago is allowed again");

    let login = |password: &str| {
        s.call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "owner@example.com", "password": password})),
            &[],
        )
    };
    assert_eq!(login(original).await.status, 200);
    login("password number 5").await.assert_error(401, "unauthorized");
    let changed = s.get("/api/v1/audit/events?event_type=PasswordChanged", &owner.token).await;
    assert!(changed
        .data()
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["data"]["password_hash"] == json!("[redacted]")));
    s.stop().await;
}

#[tokio::test]
async fn invitations_are_listed_without_tokens_and_a_revoked_one_registers_nobody() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let stranger = s.register("stranger@example.com").await;
    let invite =
        |email: &str| s.post("/api/v1/invitations", &owner.token, json!({"email": email, "role": "member"}));
    let first = invite("a@example.com").await;
    let second = invite("b@example.com").await;
    let id = second.data()["id"].as_str().unwrap().to_owned();
    let token = second.data()["token"].as_str().unwrap().to_owned();

    let count = s.events().await;
    s.call(Method::DELETE, &format!("/api/v1/invitations/{id}"), Some(&stranger.token), None, &[])
        .await
        .assert_error(404, "not_found");
    assert_eq!(s.events().await, count);
    let revoked =
        s.call(Method::DELETE, &format!("/api/v1/invitations/{id}"), Some(&owner.token), None, &[]).await;
    assert_eq!(revoked.status, 204);
    let position = revoked.header("x-position").unwrap().to_owned();
    s.call(Method::DELETE, &format!("/api/v1/invitations/{id}"), Some(&owner.token), None, &[])
        .await
        .assert_error(422, "invitation_invalid");
    let register = s
        .call(
            Method::POST,
            "/api/v1/auth/register",
            None,
            Some(json!({"name": "B", "email": "b@example.com", "password": "correct horse battery", "invitation_token": token})),
            &[],
        )
        .await;
    register.assert_error(422, "invitation_invalid");

    let list = s.get_at("/api/v1/invitations", &owner.token, &position).await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let items = list.data().as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(
        (items[0]["id"].as_str().unwrap(), items[0]["status"].as_str().unwrap()),
        (id.as_str(), "revoked")
    );
    assert_eq!(items[1]["id"], first.data()["id"]);
    assert_eq!(items[1]["status"], json!("pending"));
    assert!(items.iter().all(|i| i.get("token").is_none()), "tokens are shown only once");
    assert_eq!(list.body["meta"]["pagination"]["total"], json!(2));
    let theirs = s.get_at("/api/v1/invitations", &stranger.token, &position).await;
    assert_eq!(theirs.data().as_array().unwrap().len(), 0);
    s.stop().await;
}
