//! API keys: created with a secret shown once, acting with their own permissions (never more
//! than their creator's) and named as the actor in the log, last use kept by a projection,
//! revoked or expired → 401 on every node.

use std::time::{Duration, Instant};

use parley_tests::server::{Answer, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

async fn create_key(s: &TestServer, token: &str, body: Value) -> Answer {
    s.post("/api/v1/api_keys", token, body).await
}

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or_else(|| panic!("{field} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_acts_with_its_own_permissions_and_is_named_as_the_actor() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let member = s.invite_member(&owner, "member@example.com").await;

    // Bad requests are refused and write nothing.
    let before = s.events().await;
    let future = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let past = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let bad = [
        (json!({"name": "", "permissions": []}), 422),
        (json!({"name": "CI", "permissions": ["users.fly"]}), 422),
        (json!({"name": "CI"}), 422),
        (json!({"name": "CI", "permissions": [], "expires_at": past}), 422),
        (json!({"name": "CI", "permissions": [], "expires_at": "tomorrow"}), 422),
    ];
    for (body, status) in bad {
        let a = create_key(&s, &owner.token, body.clone()).await;
        assert_eq!(a.status.as_u16(), status, "{body}: {:?}", a.body);
    }
    create_key(&s, &member.token, json!({"name": "Mine", "permissions": []}))
        .await
        .assert_error(403, "forbidden");
    let replayable = s
        .call(
            Method::POST,
            "/api/v1/api_keys",
            Some(&owner.token),
            Some(json!({"name": "CI", "permissions": []})),
            &[("idempotency-key", "k-1")],
        )
        .await;
    replayable.assert_error(400, "idempotency_not_supported");
    assert_eq!(s.events().await, before, "nothing written");

    // Created: the secret once, its prefix visible, its hash nowhere. (It holds what a member
    // holds, so that it may invite members: nobody gives a role granting more than they hold.)
    let created = create_key(
        &s,
        &owner.token,
        json!({"name": "Provisioning", "permissions": ["users.view", "users.invite", "audit.view", "api_keys.manage",
                               "conversations.create", "calls.start"],
               "expires_at": future}),
    )
    .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let key = created.data().clone();
    let (key_id, secret) = (str_of(&key, "id").to_owned(), str_of(&key, "secret").to_owned());
    assert!(secret.starts_with("pk_") && secret.len() > 40, "{secret}");
    assert_eq!(str_of(&key, "prefix"), &secret[..11]);
    assert!(key.get("secret_hash").is_none());

    // It acts within its permissions, as itself.
    assert_eq!(s.get("/api/v1/users", &secret).await.status, 200);
    let invited =
        s.post("/api/v1/invitations", &secret, json!({"email": "c@example.com", "role": "member"})).await;
    assert_eq!(invited.status, 201, "{:?}", invited.body);
    let forbidden = [
        (Method::PUT, format!("/api/v1/users/{}/roles", member.id), Some(json!({"roles": ["admin"]}))),
        (
            Method::POST,
            "/api/v1/conversations".to_owned(),
            Some(json!({"kind": "group", "title": "t", "member_ids": []})),
        ),
        (Method::GET, "/api/v1/users/me".to_owned(), None),
        (Method::DELETE, "/api/v1/auth/logout".to_owned(), None),
    ];
    for (method, path, body) in forbidden {
        let a = s.call(method.clone(), &path, Some(&secret), body, &[]).await;
        a.assert_error(403, "forbidden");
    }
    // A key grants nothing it does not hold either.
    let escalate = create_key(&s, &secret, json!({"name": "More", "permissions": ["users.manage"]})).await;
    escalate.assert_error(403, "forbidden");
    let log = s.get_at("/api/v1/audit/events?stream_type=Invitation", &secret, &invited.position()).await;
    let event =
        log.data().as_array().unwrap().iter().find(|e| e["stream_id"] == invited.data()["id"]).unwrap();
    assert_eq!(event["event_type"], "InvitationCreated");
    assert_eq!(event["metadata"]["actor_type"], "api_key");
    assert_eq!(event["metadata"]["actor_id"], json!(key_id));
    let log = s.get_at("/api/v1/audit/events?stream_type=ApiKey", &owner.token, &created.position()).await;
    assert_eq!(log.data()[0]["data"]["secret_hash"], "[redacted]");
    assert_eq!(log.data()[0]["metadata"]["actor_id"], json!(owner.id));

    // Its last use reaches the list through the log: watch for it, then read at its position.
    let mut cable = s.cable(Some(&owner.token)).await;
    assert_eq!(cable.frame().await["type"], "welcome");
    cable.subscribe("account", None, None).await;
    let other =
        create_key(&s, &owner.token, json!({"name": "Reporting", "permissions": ["users.view"]})).await;
    let other_secret = str_of(other.data(), "secret").to_owned();
    assert_eq!(s.get("/api/v1/users", &other_secret).await.status, 200);
    let used = loop {
        let frame = cable.frame().await;
        if frame["event"]["event_type"] == "ApiKeyUsed" {
            break frame;
        }
    };
    assert_eq!(used["event"]["stream_id"], other.data()["id"]);
    let list = s.get_at("/api/v1/api_keys", &owner.token, str_of(&used, "position")).await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let listed = list.data().as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], other.data()["id"], "newest first");
    assert!(listed[0]["last_used_at"].is_string(), "{:?}", listed[0]);
    assert_eq!(listed[1]["status"], "active");
    assert_eq!(listed[1]["prefix"], json!(&secret[..11]));
    assert!(listed.iter().all(|k| k.get("secret").is_none() && k.get("secret_hash").is_none()));
    assert_eq!(list.body["meta"]["pagination"]["total"], 2);

    // Revoked: refused at once; revoking again changes nothing; an unknown key is not found.
    let path = format!("/api/v1/api_keys/{key_id}");
    let revoked = s.call(Method::DELETE, &path, Some(&owner.token), None, &[]).await;
    assert_eq!(revoked.status, 204, "{:?}", revoked.body);
    s.get("/api/v1/users", &secret).await.assert_error(401, "unauthorized");
    assert_eq!(s.call(Method::DELETE, &path, Some(&owner.token), None, &[]).await.status, 204);
    let unknown = format!("/api/v1/api_keys/{}", uuid::Uuid::now_v7());
    s.call(Method::DELETE, &unknown, Some(&owner.token), None, &[]).await.assert_error(404, "not_found");
    let list = s.get_at("/api/v1/api_keys", &owner.token, revoked.header("x-position").unwrap()).await;
    assert_eq!(list.data()[1]["status"], "revoked");
    for garbage in ["pk_", "pk_nothing", "pk_\u{e9}"] {
        s.get("/api/v1/users", garbage).await.assert_error(401, "unauthorized");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_works_on_a_server_started_later_and_its_revocation_reaches_it_within_a_second() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let created =
        create_key(&s, &owner.token, json!({"name": "Feed", "permissions": ["users.view", "audit.view"]}))
            .await;
    let secret = str_of(created.data(), "secret").to_owned();
    // Server B starts after the key was made: it can only know the key from the write side.
    let b = s.second_server(|_| {}).await;
    let users_on_b = || s.http.get(format!("http://{}/api/v1/users", b.addr)).bearer_auth(&secret).send();
    assert_eq!(users_on_b().await.unwrap().status(), 200, "B finds a key made before it started");

    // A WebSocket authenticated by the key follows the account, until the key is revoked.
    let mut cable = s.cable(Some(&secret)).await;
    assert_eq!(cable.frame().await["type"], "welcome");
    assert_eq!(cable.subscribe("account", None, None).await["type"], "subscribed");
    let revoked = s
        .call(
            Method::DELETE,
            &format!("/api/v1/api_keys/{}", str_of(created.data(), "id")),
            Some(&owner.token),
            None,
            &[],
        )
        .await;
    assert_eq!(revoked.status, 204, "{:?}", revoked.body);
    let at = Instant::now();
    loop {
        if users_on_b().await.unwrap().status() == 401 {
            break;
        }
        assert!(at.elapsed() < Duration::from_secs(1), "B still accepts the key after 1 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Events up to the revocation may arrive first; then the socket closes.
    let closed = loop {
        match cable.next().await {
            Ok(frame) => assert_ne!(frame["event"]["event_type"], "ApiKeyRevoked", "delivered after the end"),
            Err(code) => break code,
        }
    };
    assert_eq!(closed, Some(4401), "the key's WebSocket is closed");
    assert_eq!(s.cable(Some(&secret)).await.next().await, Err(Some(4401)), "and cannot reconnect");
    b.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn an_expired_key_is_refused() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let expires_at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let created = create_key(
        &s,
        &owner.token,
        json!({"name": "Short", "permissions": ["users.view"], "expires_at": expires_at.to_rfc3339()}),
    )
    .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let secret = str_of(created.data(), "secret").to_owned();
    assert_eq!(s.get("/api/v1/users", &secret).await.status, 200);
    // Waiting for the clock, not for a worker.
    let left = (expires_at - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(50)).await;
    let refused = s.get("/api/v1/users", &secret).await;
    refused.assert_error(401, "unauthorized");
    assert_eq!(refused.body["error"], "the API key has expired");
    let list = s.get("/api/v1/api_keys", &owner.token).await;
    assert_eq!(list.data()[0]["status"], "expired");
    s.stop().await;
}
