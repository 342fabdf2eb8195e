//! Sessions: rotating refresh tokens with reuse detection, logout honoured on every node.

use std::time::{Duration, Instant};

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
async fn refresh_rotates_and_a_reused_refresh_token_revokes_the_whole_session() {
    let s = TestServer::start().await;
    s.register("owner@example.com").await;
    let first = s.login("owner@example.com").await;
    let refresh = |token: &str| {
        s.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refresh_token": token})), &[])
    };
    let rotated = refresh(first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    let owner = rotated.data().clone();
    assert_ne!(owner["refresh_token"], first["refresh_token"]);
    assert_eq!(s.get("/api/v1/users/me", owner["access_token"].as_str().unwrap()).await.status, 200);

    // A thief replays the first refresh token: the session ends for everyone.
    let stolen = refresh(first["refresh_token"].as_str().unwrap()).await;
    stolen.assert_error(401, "unauthorized");
    for token in [&owner["access_token"], &first["access_token"]] {
        s.get("/api/v1/users/me", token.as_str().unwrap()).await.assert_error(401, "unauthorized");
    }
    refresh(owner["refresh_token"].as_str().unwrap()).await.assert_error(401, "unauthorized");
    refresh("never-issued").await.assert_error(401, "unauthorized");
    let ended: Vec<(String,)> =
        sqlx::query_as("SELECT payload->>'reason' FROM events WHERE event_type = 'SessionEnded'")
            .fetch_all(s.t.app.store.pool())
            .await
            .unwrap();
    assert_eq!(ended, vec![("refresh_token_reused".to_owned(),)]);
    // Another session of the same user is not affected.
    let other = s.login("owner@example.com").await;
    assert_eq!(s.get("/api/v1/users/me", other["access_token"].as_str().unwrap()).await.status, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_on_one_server_is_refused_by_another_within_a_second_and_closes_websockets() {
    let s = TestServer::start().await;
    // Server B: its own process state (pool, store, wake-ups, denylist), the same database.
    let b = s.second_server(|_| {}).await;
    let owner = s.register("owner@example.com").await;
    let on_b = |path: &str| format!("http://{}{path}", b.addr);
    let me_on_b = || {
        s.http
            .get(on_b("/api/v1/users/me"))
            .bearer_auth(&owner.token)
            .header("x-min-position", &owner.position)
            .send()
    };
    assert_eq!(me_on_b().await.unwrap().status(), 200, "the token works on B");
    let mut cable = s.cable(Some(&owner.token)).await;
    assert_eq!(cable.frame().await["type"], json!("welcome"));

    let logout = s.call(Method::DELETE, "/api/v1/auth/logout", Some(&owner.token), None, &[]).await;
    assert_eq!(logout.status, 204);
    assert!(logout.header("x-position").is_some());
    let logged_out = Instant::now();
    s.get("/api/v1/users/me", &owner.token).await.assert_error(401, "unauthorized");
    loop {
        let status = me_on_b().await.unwrap().status();
        if status == 401 {
            break;
        }
        assert!(logged_out.elapsed() < Duration::from_secs(1), "B still accepts the token after 1 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cable.next().await, Err(Some(4401)), "the open WebSocket is closed");
    let mut again = s.cable(Some(&owner.token)).await;
    assert_eq!(again.next().await, Err(Some(4401)), "and cannot reconnect");
    b.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ended_credentials_reach_another_server_even_while_an_old_transaction_holds_the_log_back() {
    let s = TestServer::start().await;
    let b = s.second_server(|_| {}).await;
    let owner = s.register("owner@example.com").await;
    let key =
        s.post("/api/v1/api_keys", &owner.token, json!({"name": "k", "permissions": ["users.view"]})).await;
    let secret = key.data()["secret"].as_str().unwrap().to_owned();
    let users_on_b = |credential: &str| {
        s.http.get(format!("http://{}/api/v1/users", b.addr)).bearer_auth(credential.to_owned()).send()
    };
    assert_eq!(users_on_b(&owner.token).await.unwrap().status(), 200);
    assert_eq!(users_on_b(&secret).await.unwrap().status(), 200);

    let ws_url = format!("ws://{}/api/v1/cable?token={}", b.addr, owner.token);
    let mut cable_on_b =
        parley_tests::server::Cable { ws: tokio_tungstenite::connect_async(ws_url).await.unwrap().0 };
    assert_eq!(cable_on_b.frame().await["type"], "welcome");

    // An old transaction with an xid stays open: the commit-safe feed cannot pass it.
    let mut old = s.t.app.store.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()").execute(&mut *old).await.unwrap();
    let revoke_key = format!("/api/v1/api_keys/{}", key.data()["id"].as_str().unwrap());
    assert_eq!(s.call(Method::DELETE, &revoke_key, Some(&owner.token), None, &[]).await.status, 204);
    let logout = s.call(Method::DELETE, "/api/v1/auth/logout", Some(&owner.token), None, &[]).await;
    assert_eq!(logout.status, 204);
    let at = Instant::now();
    for credential in [&owner.token, &secret] {
        while users_on_b(credential).await.unwrap().status() != 401 {
            assert!(at.elapsed() < Duration::from_secs(1), "B still accepts a credential after 1 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(cable_on_b.next().await, Err(Some(4401)), "B closes the WebSocket of the ended session");
    assert!(at.elapsed() < Duration::from_secs(1), "within a second");
    assert!(
        s.t.app.store.events_behind_horizon().await.unwrap(),
        "the log was held back all along: the news came another way"
    );
    old.rollback().await.unwrap();
    b.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn a_deactivated_user_cannot_log_in_and_their_tokens_and_websocket_die() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let bob = s.invite_member(&owner, "bob@example.com").await;
    let bob_again = s.login("bob@example.com").await;
    let mut cable = s.cable(Some(&bob.token)).await;
    assert_eq!(cable.frame().await["type"], json!("welcome"));
    let count = s.events().await;

    let path = format!("/api/v1/users/{}", bob.id);
    s.call(Method::DELETE, &format!("/api/v1/users/{}", owner.id), Some(&bob.token), None, &[])
        .await
        .assert_error(403, "forbidden");
    s.call(Method::DELETE, &format!("/api/v1/users/{}", owner.id), Some(&owner.token), None, &[])
        .await
        .assert_error(403, "forbidden");
    s.call(Method::DELETE, "/api/v1/users/not-a-uuid", Some(&owner.token), None, &[])
        .await
        .assert_error(404, "not_found");
    let stranger = s.register("stranger@example.com").await;
    s.call(Method::DELETE, &path, Some(&stranger.token), None, &[]).await.assert_error(404, "not_found");
    assert_eq!(s.events().await, count + 3, "only the stranger's registration was written");

    let deactivated = s.call(Method::DELETE, &path, Some(&owner.token), None, &[]).await;
    assert_eq!(deactivated.status, 204, "{:?}", deactivated.body);
    let position = deactivated.header("x-position").unwrap().to_owned();
    s.get("/api/v1/users/me", &bob.token).await.assert_error(401, "unauthorized");
    s.get("/api/v1/users/me", bob_again["access_token"].as_str().unwrap())
        .await
        .assert_error(401, "unauthorized");
    assert_eq!(cable.next().await, Err(Some(4401)), "the open WebSocket is closed");
    let login_again = s
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "bob@example.com", "password": "correct horse battery"})),
            &[],
        )
        .await;
    login_again.assert_error(401, "unauthorized");
    s.call(
        Method::POST,
        "/api/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": bob_again["refresh_token"]})),
        &[],
    )
    .await
    .assert_error(401, "unauthorized");
    s.call(Method::DELETE, &path, Some(&owner.token), None, &[]).await.assert_error(409, "conflict");

    let audit = s.get_at("/api/v1/audit/events?event_type=UserDeactivated", &owner.token, &position).await;
    assert_eq!(audit.data()[0]["metadata"]["actor_id"], json!(owner.id), "the audit log names who did it");
    let ended = s.get_at("/api/v1/audit/events?event_type=SessionEnded", &owner.token, &position).await;
    assert_eq!(ended.data().as_array().unwrap().len(), 2, "both of bob's sessions ended");
    s.stop().await;
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

#[tokio::test]
async fn failed_logins_per_email_and_auth_requests_per_ip_are_limited_with_retry_after() {
    let s = TestServer::start_with(|o| {
        o.failed_logins = 3;
        o.auth_per_minute = 1000;
    })
    .await;
    s.register("owner@example.com").await;
    s.register("other@example.com").await;
    let login = |email: &str, password: &str| {
        s.call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": email, "password": password})),
            &[],
        )
    };
    for _ in 0..3 {
        login("owner@example.com", "wrong password!!").await.assert_error(401, "unauthorized");
    }
    let limited = login("Owner@Example.com", "correct horse battery").await;
    limited.assert_error(429, "rate_limited");
    assert!(limited.header("retry-after").unwrap().parse::<u64>().unwrap() > 0);
    // Every node counts the same failures: server B (same database) refuses too.
    let b = s.second_server(|o| o.failed_logins = 3).await;
    let on_b = s
        .http
        .post(format!("http://{}/api/v1/auth/login", b.addr))
        .json(&json!({"email": "owner@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(on_b.status(), 429, "B counts A's failures");
    assert!(on_b.headers().contains_key("retry-after"));
    b.stop().await;
    assert_eq!(
        login("other@example.com", "correct horse battery").await.status,
        200,
        "other emails are not affected"
    );
    // Successful logins are no failures: many in a row stay within the limit.
    for _ in 0..5 {
        assert_eq!(login("other@example.com", "correct horse battery").await.status, 200);
    }
    s.stop().await;

    let s = TestServer::start_with(|o| o.auth_per_minute = 5).await;
    let mut statuses = Vec::new();
    for i in 0..7 {
        let a = login_any(&s, i).await;
        statuses.push(a.status.as_u16());
        if a.status == 429 {
            a.assert_error(429, "rate_limited");
            assert!(a.header("retry-after").is_some());
        }
    }
    assert_eq!(statuses, vec![401, 401, 401, 401, 401, 429, 429], "the sixth request in a minute is refused");
    assert_eq!(
        s.call(Method::GET, "/health", None, None, &[]).await.status,
        200,
        "other routes are not limited"
    );
    s.stop().await;
}

async fn login_any(s: &TestServer, i: usize) -> parley_tests::server::Answer {
    let body = json!({"email": format!("nobody{i}@example.com"), "password": "wrong password!!"});
    s.call(Method::POST, "/api/v1/auth/login", None, Some(body), &[]).await
}
