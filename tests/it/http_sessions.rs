//! Sessions: rotating refresh tokens with reuse detection, logout and revocation honoured on
//! every node, deactivation, login protection.

use std::time::{Duration, Instant};

use parley_tests::server::TestServer;
use reqwest::Method;
use serde_json::json;

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
    assert_eq!(s.events().await, count + 4, "only the stranger's registration was written");

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
