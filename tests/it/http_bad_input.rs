//! Bad input gets a clear answer in the envelope, and nothing is written.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use parley_tests::server::TestServer;
use reqwest::Method;
use serde_json::json;

/// Signs claims with `secret` the way an attacker or a stale server would.
fn token(header: serde_json::Value, claims: serde_json::Value, secret: &[u8]) -> String {
    use hmac_sha256::sign;
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signature = URL_SAFE_NO_PAD.encode(sign(format!("{h}.{c}").as_bytes(), secret));
    format!("{h}.{c}.{signature}")
}

mod hmac_sha256 {
    use sha2::{Digest, Sha256};

    /// HMAC-SHA256, written out so the test does not trust the code under test.
    pub fn sign(message: &[u8], key: &[u8]) -> Vec<u8> {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let mut h = Sha256::new();
        h.update(&inner);
        h.update(message);
        let inner_hash = h.finalize();
        let mut h = Sha256::new();
        h.update(&outer);
        h.update(inner_hash);
        h.finalize().to_vec()
    }
}

#[tokio::test]
async fn malformed_requests_get_the_envelope_with_the_right_code_and_write_nothing() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let conversation = s.group(&owner, &[]).await;
    let messages = format!("/api/v1/conversations/{conversation}/messages");
    let before = s.events().await;
    let t = Some(owner.token.as_str());
    let url = |p: &str| format!("{}{p}", s.base);

    // Malformed JSON, wrong content type, too large.
    let raw = |body: &'static str, content_type: &'static str| {
        s.http
            .post(url(&messages))
            .bearer_auth(&owner.token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let a = raw("{\"body\": ", "application/json").await.unwrap();
    assert_eq!(a.status(), 400);
    assert_eq!(a.json::<serde_json::Value>().await.unwrap()["code"], json!("bad_request"));
    let a = raw("{\"body\": \"x\"}", "text/plain").await.unwrap();
    assert_eq!(a.status(), 415);
    assert_eq!(a.json::<serde_json::Value>().await.unwrap()["code"], json!("unsupported_media_type"));
    let huge = json!({"body": "x".repeat(1024 * 1024 + 10)}).to_string();
    let a = s
        .http
        .post(url(&messages))
        .bearer_auth(&owner.token)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 413);
    assert_eq!(a.json::<serde_json::Value>().await.unwrap()["code"], json!("payload_too_large"));

    // Missing fields, wrong types, bodies out of bounds.
    let post = |body| s.call(Method::POST, &messages, t, Some(body), &[]);
    let missing = post(json!({})).await;
    missing.assert_error(422, "validation_failed");
    assert_eq!(missing.body["details"]["body"], json!(["is required"]));
    post(json!({"body": 42})).await.assert_error(422, "validation_failed");
    post(json!({"body": ""})).await.assert_error(422, "validation_failed");
    post(json!({"body": "   "})).await.assert_error(422, "validation_failed");
    let long = post(json!({"body": "x".repeat(10_001)})).await;
    long.assert_error(422, "validation_failed");
    assert!(long.body["details"]["body"].is_array());
    post(json!(["not", "an", "object"])).await.assert_error(422, "validation_failed");
    s.post("/api/v1/conversations", &owner.token, json!({"kind": "group", "title": "x".repeat(201)}))
        .await
        .assert_error(422, "validation_failed");
    s.post("/api/v1/conversations", &owner.token, json!({"kind": "party", "title": "x"}))
        .await
        .assert_error(422, "validation_failed");
    s.post(
        "/api/v1/conversations",
        &owner.token,
        json!({"kind": "group", "title": "x", "member_ids": ["nope"]}),
    )
    .await
    .assert_error(422, "validation_failed");
    s.post("/api/v1/invitations", &owner.token, json!({"email": "not-an-email", "role": "member"}))
        .await
        .assert_error(422, "validation_failed");
    s.post("/api/v1/invitations", &owner.token, json!({"email": "a@example.com", "role": "emperor"}))
        .await
        .assert_error(422, "validation_failed");

    // Unknown routes, wrong methods, bad ids and cursors.
    s.get("/api/v1/nothing-here", &owner.token).await.assert_error(404, "not_found");
    s.call(Method::GET, "/no/such/route", None, None, &[]).await.assert_error(404, "not_found");
    s.call(Method::DELETE, "/api/v1/auth/login", None, None, &[])
        .await
        .assert_error(405, "method_not_allowed");
    s.get("/api/v1/conversations/not-a-uuid", &owner.token).await.assert_error(404, "not_found");
    s.post("/api/v1/conversations/not-a-uuid/messages", &owner.token, json!({"body": "x"}))
        .await
        .assert_error(404, "not_found");
    s.get(&format!("/api/v1/conversations/{}", uuid::Uuid::now_v7()), &owner.token)
        .await
        .assert_error(404, "not_found");
    s.get(&format!("{messages}?before=abc"), &owner.token).await.assert_error(400, "bad_request");
    s.get(&format!("{messages}?limit=many"), &owner.token).await.assert_error(400, "bad_request");
    s.get(&format!("{messages}?before=3&after=1"), &owner.token).await.assert_error(400, "bad_request");
    s.get("/api/v1/audit/events?after=zzz", &owner.token).await.assert_error(400, "bad_request");
    s.get("/api/v1/audit/events?since=yesterday", &owner.token).await.assert_error(400, "bad_request");
    s.call(Method::GET, "/api/v1/users/me", t, None, &[("x-min-position", "garbage")])
        .await
        .assert_error(400, "bad_request");
    s.call(Method::POST, &messages, t, Some(json!({"body": "x"})), &[("idempotency-key", "")])
        .await
        .assert_error(400, "bad_request");

    // Registration and login.
    let register = |body| s.call(Method::POST, "/api/v1/auth/register", None, Some(body), &[]);
    register(json!({"name": "A", "email": "a@example.com", "password": "short"}))
        .await
        .assert_error(422, "validation_failed");
    register(json!({"name": "A", "email": "bad", "password": "correct horse battery"}))
        .await
        .assert_error(422, "validation_failed");
    register(json!({"name": "A", "email": "OWNER@example.com", "password": "correct horse battery"}))
        .await
        .assert_error(409, "email_taken");
    register(json!({"name": "A", "email": "c@example.com", "password": "correct horse battery", "invitation_token": "forged"})).await.assert_error(422, "invitation_invalid");
    let login = |body| s.call(Method::POST, "/api/v1/auth/login", None, Some(body), &[]);
    let wrong = login(json!({"email": "owner@example.com", "password": "wrong password!"})).await;
    wrong.assert_error(401, "unauthorized");
    let unknown = login(json!({"email": "nobody@example.com", "password": "wrong password!"})).await;
    unknown.assert_error(401, "unauthorized");
    assert_eq!(wrong.body["error"], unknown.body["error"], "the same answer for an unknown email");

    assert_eq!(s.events().await, before, "nothing was appended");
    s.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_refused_over_http_and_close_the_websocket_with_4401() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let now = chrono::Utc::now().timestamp();
    let claims = |exp: i64, nbf: i64| {
        json!({"sub": owner.id, "acc": owner.account_id, "sid": uuid::Uuid::nil(), "jti": uuid::Uuid::nil(),
               "iat": now, "nbf": nbf, "exp": exp, "typ": "access", "roles": ["owner"], "pos": "0"})
    };
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let secret = b"test-secret-test-secret-test-secret";
    let valid = token(hs256.clone(), claims(now + 600, now), secret);
    assert_eq!(
        s.get_at("/api/v1/users/me", &valid, &owner.position).await.status,
        200,
        "the forged-by-hand valid token is accepted"
    );

    let expired = token(hs256.clone(), claims(now - 600, now - 1200), secret);
    let not_yet = token(hs256.clone(), claims(now + 1200, now + 600), secret);
    let wrong_key = token(hs256.clone(), claims(now + 600, now), b"another secret entirely");
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims(now + 600, now).to_string())
    );
    let hs512 = token(json!({"alg": "HS512", "typ": "JWT"}), claims(now + 600, now), secret);
    let mut tampered = valid.clone();
    tampered.insert(tampered.len() / 2, 'A');
    let refresh = token(
        hs256.clone(),
        {
            let mut c = claims(now + 600, now);
            c["typ"] = json!("refresh");
            c
        },
        secret,
    );
    for (name, bad) in [
        ("garbage", "garbage".to_owned()),
        ("expired", expired),
        ("not yet valid", not_yet),
        ("wrong key", wrong_key),
        ("alg none", none),
        ("wrong algorithm", hs512),
        ("tampered", tampered),
        ("not an access token", refresh),
    ] {
        let a = s.get("/api/v1/users/me", &bad).await;
        assert_eq!(a.status, 401, "{name}: {:?}", a.body);
        a.assert_error(401, "unauthorized");
        let mut cable = s.cable(Some(&bad)).await;
        assert_eq!(cable.next().await, Err(Some(4401)), "{name} closes the socket");
    }
    s.call(Method::GET, "/api/v1/users/me", None, None, &[]).await.assert_error(401, "unauthorized");
    let mut anonymous = s.cable(None).await;
    assert_eq!(anonymous.next().await, Err(Some(4401)));
    assert_eq!(s.call(Method::GET, "/health", None, None, &[]).await.body, json!({"status": "ok"}));
    assert_eq!(s.call(Method::GET, "/ready", None, None, &[]).await.status, 200);
    let metrics = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("parley_http_requests_total"), "{metrics}");
    s.stop().await;
}

/// A body that passes validation for each endpoint that takes one, so that only the foreign id
/// can refuse the request. A new endpoint with a body must be given one here (the test says so).
fn sample_body(method: &Method, template: &str, me: &str, their_user: &str) -> Option<serde_json::Value> {
    let bodiless = [
        "/api/v1/notifications/{id}/read",
        "/api/v1/admin/jobs/{id}/retry",
        "/api/v1/webhooks/subscriptions/{id}/rotate",
        "/api/v1/conversations/{id}/calls/{call_id}/accept",
        "/api/v1/conversations/{id}/calls/{call_id}/decline",
        "/api/v1/streams/{id}/start",
        "/api/v1/streams/{id}/end",
        "/api/v1/streams/{id}/join",
    ];
    if *method == Method::GET || *method == Method::DELETE || bodiless.contains(&template) {
        return None;
    }
    let body = match template {
        "/api/v1/conversations/{id}/memberships" => json!({"user_id": their_user}),
        "/api/v1/conversations/{id}/messages" => json!({"body": "hi"}),
        "/api/v1/users/{id}" => json!({"bio": "mine now"}),
        "/api/v1/users/{id}/roles" => json!({"roles": ["admin"]}),
        "/api/v1/roles/{id}" => json!({"permissions": ["users.view"]}),
        "/api/v1/conversations/{id}" => json!({"title": "mine now"}),
        "/api/v1/conversations/{id}/messages/{message_id}" => json!({"body": "mine now"}),
        "/api/v1/conversations/{id}/read" => json!({"message_id": me}),
        "/api/v1/users/{id}/password" => {
            json!({"current_password": "correct horse battery", "new_password": "another password"})
        }
        "/api/v1/webhooks/subscriptions/{id}" => json!({"description": "mine now"}),
        "/api/v1/conversations/{id}/calls" => json!({"kind": "audio"}),
        "/api/v1/webhooks/subscriptions/{id}/resend" => json!({"event_id": me}),
        "/api/v1/webhooks/subscriptions/{id}/recover" => json!({"since": "2026-01-01T00:00:00Z"}),
        "/api/v1/spaces/{id}" => json!({"name": "mine now"}),
        "/api/v1/spaces/{id}/experiences" => {
            json!({"name": "mine", "experience_type": "course", "price_cents": 0})
        }
        "/api/v1/experiences/{id}" => json!({"name": "mine now"}),
        "/api/v1/experiences/{id}/streams" => json!({"title": "mine", "starts_at": "2026-12-01T10:00:00Z"}),
        _ => panic!("{method} {template} takes a body: give it a valid one in sample_body (me: {me})"),
    };
    Some(body)
}

/// Every endpoint that takes an id, given an id from another account: 404, nothing written. The
/// endpoints come from the router's own list, so a new one cannot be left out.
#[tokio::test]
async fn every_endpoint_taking_an_id_hides_other_accounts_and_writes_nothing() {
    let s = TestServer::start().await;
    // Theirs: a whole account with a member, a conversation with a message, an invitation.
    let theirs = s.register("theirs@example.com").await;
    let their_member = s.invite_member(&theirs, "member@theirs.com").await;
    let conversation = s.group(&theirs, &[&their_member]).await;
    let message = s
        .post(&format!("/api/v1/conversations/{conversation}/messages"), &theirs.token, json!({"body": "x"}))
        .await;
    let message_id = message.data()["id"].as_str().unwrap().to_owned();
    let invitation = s
        .post("/api/v1/invitations", &theirs.token, json!({"email": "new@theirs.com", "role": "member"}))
        .await;
    let invitation_id = invitation.data()["id"].as_str().unwrap().to_owned();
    let role = s
        .post("/api/v1/roles", &theirs.token, json!({"name": "Theirs", "permissions": ["users.view"]}))
        .await;
    let role_id = role.data()["id"].as_str().unwrap().to_owned();
    let key = s
        .post("/api/v1/api_keys", &theirs.token, json!({"name": "Theirs", "permissions": ["users.view"]}))
        .await;
    let key_id = key.data()["id"].as_str().unwrap().to_owned();
    let space = s.post("/api/v1/spaces", &theirs.token, json!({"name": "Theirs", "slug": "theirs"})).await;
    let space_id = space.data()["id"].as_str().unwrap().to_owned();
    let experience = s
        .post(
            &format!("/api/v1/spaces/{space_id}/experiences"),
            &theirs.token,
            json!({"name": "Theirs", "experience_type": "live_stream", "price_cents": 0}),
        )
        .await;
    let experience_id = experience.data()["id"].as_str().unwrap().to_owned();
    let stream = s
        .post(
            &format!("/api/v1/experiences/{experience_id}/streams"),
            &theirs.token,
            json!({"title": "Theirs", "starts_at": "2026-12-01T10:00:00Z"}),
        )
        .await;
    let stream_id = stream.data()["id"].as_str().unwrap().to_owned();
    let grant = s
        .post(
            "/api/v1/access_grants",
            &theirs.token,
            json!({"user_id": their_member.id, "experience_id": experience_id}),
        )
        .await;
    let grant_id = grant.data()["id"].as_str().unwrap().to_owned();
    let reaction = s
        .post("/api/v1/reactions", &their_member.token, json!({"message_id": message_id, "emoji": "👍"}))
        .await;
    assert_eq!(reaction.status, 201, "{:?}", reaction.body);
    let reaction_id = reaction.data()["id"].as_str().unwrap().to_owned();
    let job_id = s
        .t
        .app
        .jobs
        .enqueue_now(
            &parley_jobs::NewJob::new("test.theirs", json!({})).account(theirs.account_id.parse().unwrap()),
        )
        .await
        .unwrap()
        .unwrap()
        .to_string();
    let subscription = s
        .post(
            "/api/v1/webhooks/subscriptions",
            &theirs.token,
            json!({"url": "http://127.0.0.1:9/theirs", "event_types": ["MessagePosted"]}),
        )
        .await;
    let subscription_id = subscription.data()["id"].as_str().unwrap().to_owned();
    let hook = s
        .post(
            "/api/v1/webhooks/incoming",
            &theirs.token,
            json!({"conversation_id": conversation, "name": "Theirs"}),
        )
        .await;
    let hook_id = hook.data()["id"].as_str().unwrap().to_owned();
    let call = s
        .post(&format!("/api/v1/conversations/{conversation}/calls"), &theirs.token, json!({"kind": "audio"}))
        .await;
    assert_eq!(call.status, 201, "{:?}", call.body);
    let call_id = call.data()["id"].as_str().unwrap().to_owned();
    // The call is rung in the background: let that be written before counting what is.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (rung,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM events WHERE event_type = 'CallRinging' AND stream_id = $1")
                .bind(&call_id)
                .fetch_one(s.t.app.store.pool())
                .await
                .unwrap();
        if rung == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "their call never rang");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let settled = call.position();
    let told = s.get_at("/api/v1/notifications", &their_member.token, &settled).await;
    let notification_id = told.data()[0]["id"].as_str().expect("they were added: a notification").to_owned();
    // Mine: an owner with every permission.
    let me = s.register("me@example.com").await;
    let user = their_member.id.clone();
    // Their id for each kind of resource, by the path segment that names it.
    let theirs_by_resource = [
        ("conversations", ("Conversation", conversation.clone())),
        ("users", ("User", user.clone())),
        ("invitations", ("Invitation", invitation_id.clone())),
        ("roles", ("Role", role_id.clone())),
        ("api_keys", ("ApiKey", key_id.clone())),
        ("reactions", ("Conversation", conversation.clone())),
        ("notifications", ("Inbox", their_member.id.clone())),
        ("admin", ("Job", job_id.clone())),
        ("webhooks", ("WebhookSubscription", subscription_id.clone())),
        ("webhooks/incoming", ("IncomingWebhook", hook_id.clone())),
        ("spaces", ("Space", space_id.clone())),
        ("experiences", ("Experience", experience_id.clone())),
        ("streams", ("Stream", stream_id.clone())),
        ("access_grants", ("AccessGrant", grant_id.clone())),
    ];
    let id_of = |resource: &str| {
        theirs_by_resource
            .iter()
            .find(|(r, _)| *r == resource)
            .map(|(_, id)| id.clone())
            .unwrap_or_else(|| panic!("no foreign id for /{resource}: add one of another account here"))
    };
    let mut cases: Vec<(Method, String, Option<serde_json::Value>)> = Vec::new();
    let routes = parley_api::http::routes::list();
    for (method, template) in routes.iter().filter(|(_, p)| p.contains('{')) {
        // Signed by the hook's secret, not authenticated by a credential: no account to hide from.
        if *method == Method::POST && template == "/api/v1/webhooks/incoming/{id}" {
            continue;
        }
        // Projections serve every account: there is none to hide them from.
        if template == "/api/v1/admin/projections/{name}/rebuild" {
            continue;
        }
        // The docs page's files belong to no account.
        if template.starts_with("/docs/") {
            continue;
        }
        let body = sample_body(method, template, &me.id, &user);
        if template == "/api/v1/audit/streams/{stream_type}/{stream_id}" {
            for (_, (stream_type, id)) in &theirs_by_resource {
                cases.push((
                    method.clone(),
                    format!("/api/v1/audit/streams/{stream_type}/{id}"),
                    body.clone(),
                ));
            }
            continue;
        }
        let resource = template.trim_start_matches("/api/v1/").split('/').next().unwrap_or_default();
        let id = match resource {
            "reactions" => reaction_id.clone(),
            "notifications" => notification_id.clone(),
            "webhooks" if template.starts_with("/api/v1/webhooks/incoming") => hook_id.clone(),
            _ => id_of(resource).1,
        };
        let path = template
            .replace("{id}", &id)
            .replace("{message_id}", &message_id)
            .replace("{user_id}", &user)
            .replace("{call_id}", &call_id);
        cases.push((method.clone(), path, body));
    }
    assert!(cases.iter().all(|(_, path, _)| !path.contains('{')), "every path parameter filled: {cases:?}");
    assert!(cases.len() >= 24, "the router lists its id-taking endpoints: {cases:?}");
    // And adding myself to their conversation.
    cases.push((
        Method::POST,
        format!("/api/v1/conversations/{conversation}/memberships"),
        Some(json!({"user_id": me.id})),
    ));
    // And reacting to their message (its id is in the body).
    cases.push((
        Method::POST,
        "/api/v1/reactions".into(),
        Some(json!({"message_id": message_id, "emoji": "👍"})),
    ));
    let count = s.events().await;
    for (method, path, body) in cases {
        let a = s
            .call(method.clone(), &path, Some(&me.token), body, &[("x-min-position", settled.as_str())])
            .await;
        assert_eq!(a.status.as_u16(), 404, "{method} {path}: {:?}", a.body);
        a.assert_error(404, "not_found");
    }
    assert_eq!(s.events().await, count, "nothing was written");
    // Nor do their resources show up in my lists or my audit log (read as of my registration,
    // which came after theirs).
    let settled = &me.position;
    let audit = s.get_at("/api/v1/audit/events?limit=1000", &me.token, settled).await;
    let mine = audit.data().as_array().unwrap();
    assert!(mine.iter().all(|e| e["stream_id"] != json!(conversation) && e["stream_id"] != json!(user)));
    assert!(mine.iter().all(|e| !e["data"].to_string().contains(&message_id)));
    let roles = s.get_at("/api/v1/roles", &me.token, settled).await;
    assert_eq!(roles.data().as_array().unwrap().len(), 3, "only the system roles: {:?}", roles.body);
    let users = s.get_at("/api/v1/users", &me.token, settled).await;
    assert_eq!(users.data().as_array().unwrap().len(), 1);
    for list in ["/api/v1/invitations", "/api/v1/api_keys"] {
        assert_eq!(s.get_at(list, &me.token, settled).await.data().as_array().unwrap().len(), 0, "{list}");
    }
    s.stop().await;
}
