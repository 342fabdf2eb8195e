//! The per-credential request limit on `/api/v1` (counted per user or API key, across nodes)
//! and CORS for the configured browser origins. The limiter's clock is pinned, so no test waits
//! for a window to end (nor straddles one by chance).

use chrono::{DateTime, Duration, TimeZone, Utc};
use parley_api::http::Server;
use parley_tests::server::{Answer, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;

const ORIGIN: &str = "https://app.example.com";
const ALLOWED_HEADERS: [&str; 5] =
    ["authorization", "content-type", "idempotency-key", "if-match", "x-min-position"];
const EXPOSED_HEADERS: [&str; 5] =
    ["x-position", "etag", "idempotent-replayed", "retry-after", "x-request-id"];

/// 10 s into a minute.
fn minute_start() -> DateTime<Utc> {
    let now = Utc::now().timestamp();
    Utc.timestamp_opt(now - now.rem_euclid(60) + 10, 0).unwrap()
}

fn server(s: &TestServer) -> &Server {
    s.server.as_ref().unwrap()
}

async fn me(s: &TestServer, token: &str) -> Answer {
    s.get("/api/v1/users/me", token).await
}

#[track_caller]
fn assert_limited(a: &Answer) {
    a.assert_error(429, "rate_limited");
    let wait: u64 = a.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_and_each_key_has_its_own_requests_per_minute() {
    let s = TestServer::start_with(|c| c.api_rate_per_minute = 5).await;
    let limiter = server(&s).api_limiter();
    let start = minute_start();
    limiter.pin_clock(Some(start));
    let owner = s.register("owner@example.com").await;
    let member = s.invite_member(&owner, "member@example.com").await;
    let key =
        s.post("/api/v1/api_keys", &owner.token, json!({"name": "k", "permissions": ["users.view"]})).await;
    assert_eq!(key.status, StatusCode::CREATED, "{:?}", key.body);
    let secret = key.data()["secret"].as_str().unwrap().to_owned();
    // The owner has made 2 requests; registering (under `/auth`) counted for nobody.

    for i in 0..5 {
        assert_eq!(me(&s, &member.token).await.status, StatusCode::OK, "request {}", i + 1);
    }
    let refused = me(&s, &member.token).await;
    assert_limited(&refused);
    assert_eq!(refused.header("retry-after"), Some("50"), "to the end of the minute");
    // Every kind of request counts, and is refused past the limit before it does anything.
    let before = s.events().await;
    let post = s.post("/api/v1/conversations", &member.token, json!({"kind": "group", "title": "T"})).await;
    assert_limited(&post);
    assert_eq!(s.events().await, before);

    // Another user of the account, and the owner's key, are counted apart.
    for _ in 0..3 {
        assert_eq!(me(&s, &owner.token).await.status, StatusCode::OK);
    }
    assert_limited(&me(&s, &owner.token).await);
    for _ in 0..5 {
        assert_eq!(s.get("/api/v1/users", &secret).await.status, StatusCode::OK);
    }
    assert_limited(&s.get("/api/v1/users", &secret).await);

    // Unauthenticated requests are not counted (nor refused by this limit).
    let anonymous = s.call(Method::GET, "/api/v1/users/me", None, None, &[]).await;
    anonymous.assert_error(401, "unauthorized");
    let bad = s.get("/api/v1/users/me", "not-a-token").await;
    bad.assert_error(401, "unauthorized");

    // The window's end lets everyone through again.
    limiter.pin_clock(Some(start + Duration::seconds(50)));
    assert_eq!(me(&s, &member.token).await.status, StatusCode::OK);
    assert_eq!(s.get("/api/v1/users", &secret).await.status, StatusCode::OK);

    // The counts are shared through the database, a row per key and window.
    limiter.sync().await.unwrap();
    let (rows, hits): (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(hits)::bigint FROM api_rate_counts WHERE window_start = $1")
            .bind(start + Duration::seconds(50))
            .fetch_one(s.t.app.store.pool())
            .await
            .unwrap();
    assert_eq!((rows, hits), (2, 2));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cable_counts_its_handshake_once() {
    let s = TestServer::start_with(|c| c.api_rate_per_minute = 3).await;
    server(&s).api_limiter().pin_clock(Some(minute_start()));
    let owner = s.register("owner@example.com").await;
    let mut cable = s.cable(Some(&owner.token)).await;
    assert_eq!(cable.frame().await["type"], "welcome");
    // Frames are not requests.
    assert_eq!(cable.subscribe("account", None, None).await["type"], "subscribed");
    for _ in 0..5 {
        cable.send(json!({"command": "subscribe", "channel": "nowhere"})).await;
        cable.frame().await;
    }
    // The handshake was one request: two more are allowed.
    assert_eq!(me(&s, &owner.token).await.status, StatusCode::OK);
    assert_eq!(me(&s, &owner.token).await.status, StatusCode::OK);
    assert_limited(&me(&s, &owner.token).await);
    // A handshake past the limit is refused with 429.
    let url = format!("ws://{}/api/v1/cable?token={}", server(&s).addr, owner.token);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("the handshake should be refused: {:?}", other.map(|_| ())),
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_the_counts_of_a_user() {
    const LIMIT: usize = 6;
    let s = TestServer::start_with(|c| c.api_rate_per_minute = LIMIT as u32).await;
    let b = s.second_server(|c| c.api_rate_per_minute = LIMIT as u32).await;
    let start = minute_start();
    let (la, lb) = (server(&s).api_limiter(), b.api_limiter());
    la.pin_clock(Some(start));
    lb.pin_clock(Some(start));
    let owner = s.register("owner@example.com").await;
    let on = |node: &Server| format!("http://{}/api/v1/users/me", node.addr);

    // Alternating between the nodes, both syncing after every pair of requests (one sync
    // interval, in which each node allows at most one request the other has not heard of).
    let mut allowed = 0;
    for i in 0..4 * LIMIT {
        let node = if i % 2 == 0 { server(&s) } else { &b };
        let status = s.http.get(on(node)).bearer_auth(&owner.token).send().await.unwrap().status();
        match status {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("{other}"),
        }
        if i % 2 == 1 {
            la.sync().await.unwrap();
            lb.sync().await.unwrap();
        }
    }
    assert!((LIMIT..=LIMIT + 1).contains(&allowed), "{allowed} allowed across two nodes");
    let (hits,): (i64,) = sqlx::query_as("SELECT hits FROM api_rate_counts WHERE key = $1")
        .bind(format!("user:{}", owner.id))
        .fetch_one(s.t.app.store.pool())
        .await
        .unwrap();
    assert_eq!(hits as usize, allowed, "each node added what it allowed, once");
    b.stop().await;
    s.stop().await;
}

async fn preflight(s: &TestServer, origin: &str) -> reqwest::Response {
    s.http
        .request(Method::OPTIONS, format!("{}/api/v1/conversations", s.base))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type,idempotency-key")
        .send()
        .await
        .unwrap()
}

fn list(headers: &reqwest::header::HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .collect()
}

#[track_caller]
fn assert_cors(headers: &reqwest::header::HeaderMap) {
    assert_eq!(headers.get("access-control-allow-origin").unwrap(), ORIGIN, "{headers:?}");
    assert_eq!(headers.get("access-control-allow-credentials").unwrap(), "true");
    let exposed = list(headers, "access-control-expose-headers");
    for h in EXPOSED_HEADERS {
        assert!(exposed.contains(&h.to_owned()), "{h} not exposed: {exposed:?}");
    }
}

#[track_caller]
fn assert_no_cors(headers: &reqwest::header::HeaderMap) {
    let cors: Vec<_> = headers.keys().filter(|k| k.as_str().starts_with("access-control-")).collect();
    assert!(cors.is_empty(), "{cors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_get_cors_headers_on_every_answer_and_others_none() {
    let s = TestServer::start_with(|c| {
        c.allowed_origins = vec![ORIGIN.into(), "https://admin.example.com".into()];
        c.api_rate_per_minute = 2;
    })
    .await;
    server(&s).api_limiter().pin_clock(Some(minute_start()));
    let owner = s.register("owner@example.com").await;

    // Preflight: answered without a credential, and not counted.
    for _ in 0..3 {
        let p = preflight(&s, ORIGIN).await;
        assert!(matches!(p.status().as_u16(), 200 | 204), "{}", p.status());
        let h = p.headers();
        assert_eq!(h.get("access-control-allow-origin").unwrap(), ORIGIN);
        assert_eq!(h.get("access-control-allow-credentials").unwrap(), "true");
        let methods = list(h, "access-control-allow-methods");
        for m in ["get", "post", "put", "patch", "delete"] {
            assert!(methods.contains(&m.to_owned()), "{m} not allowed: {methods:?}");
        }
        let allowed = list(h, "access-control-allow-headers");
        for header in ALLOWED_HEADERS {
            assert!(allowed.contains(&header.to_owned()), "{header} not allowed: {allowed:?}");
        }
    }

    let from = |origin: &'static str| [("origin", origin)];
    let ok = s.call(Method::GET, "/api/v1/users/me", Some(&owner.token), None, &from(ORIGIN)).await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    assert_cors(&ok.headers);
    let unauthorized = s.call(Method::GET, "/api/v1/users/me", None, None, &from(ORIGIN)).await;
    unauthorized.assert_error(401, "unauthorized");
    assert_cors(&unauthorized.headers);
    let missing = s.call(Method::GET, "/api/v1/nowhere", None, None, &from(ORIGIN)).await;
    missing.assert_error(404, "not_found");
    assert_cors(&missing.headers);
    // The second of two requests (the preflights were not counted); the third is refused, and the
    // browser can read why and for how long.
    let second = s.call(Method::GET, "/api/v1/users/me", Some(&owner.token), None, &from(ORIGIN)).await;
    assert_eq!(second.status, StatusCode::OK, "{:?}", second.body);
    let limited = s.call(Method::GET, "/api/v1/users/me", Some(&owner.token), None, &from(ORIGIN)).await;
    assert_limited(&limited);
    assert_cors(&limited.headers);
    let other_allowed =
        s.call(Method::GET, "/api/v1/users/me", None, None, &from("https://admin.example.com")).await;
    assert_eq!(other_allowed.header("access-control-allow-origin"), Some("https://admin.example.com"));

    // Any other origin: no CORS headers at all, on answers or preflights.
    let evil = "https://evil.example.com";
    let answer = s.call(Method::GET, "/api/v1/users/me", None, None, &from(evil)).await;
    answer.assert_error(401, "unauthorized");
    assert_no_cors(&answer.headers);
    assert_no_cors(preflight(&s, evil).await.headers());
    let no_origin = s.call(Method::GET, "/api/v1/users/me", None, None, &[]).await;
    assert_no_cors(&no_origin.headers);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_configured_origins_there_is_no_cors() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let a = s.call(Method::GET, "/api/v1/users/me", Some(&owner.token), None, &[("origin", ORIGIN)]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_no_cors(&a.headers);
    assert_no_cors(preflight(&s, ORIGIN).await.headers());
    s.stop().await;
}
