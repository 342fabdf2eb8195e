//! Signing-key rotation on two servers of one database, neither restarted: tokens name their key
//! (`kid`); after a rotation both servers sign with the new key within a second while the old
//! key's tokens stay valid; retiring the old key refuses its tokens on both within a second.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use parley_api::signing_keys;
use parley_tests::server::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The `kid` in a token's header.
fn kid(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().expect("a kid").to_owned()
}

async fn login(http: &reqwest::Client, base: &str) -> String {
    let a = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": "owner@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    let body: Value = a.json().await.unwrap();
    body["data"]["access_token"].as_str().unwrap().to_owned()
}

async fn me(http: &reqwest::Client, base: &str, token: &str) -> StatusCode {
    http.get(format!("{base}/api/v1/users/me")).bearer_auth(token).send().await.unwrap().status()
}

/// Polls until `ready` holds (a node looks at the keys once a second).
async fn within<F: std::future::Future<Output = bool>>(what: &str, mut ready: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !ready().await {
        assert!(Instant::now() < deadline, "{what} within 3 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_and_retire_on_every_node_without_a_restart() {
    let s = TestServer::start_with(|c| c.auth_per_minute = 10_000).await;
    let second = s.second_server(|c| c.auth_per_minute = 10_000).await;
    let (a, b) = (s.base.clone(), format!("http://{}", second.addr));
    let http = reqwest::Client::new();
    let owner = s.register("owner@example.com").await;
    let old = kid(&owner.token);
    assert_eq!(kid(&login(&http, &b).await), old, "both nodes sign with the one key");

    let pool = s.t.app.store.pool();
    let new = signing_keys::rotate(pool).await.unwrap();
    assert_ne!(new, old);
    within("both nodes sign with the new key", || {
        let (http, a, b, new) = (&http, &a, &b, &new);
        async move { kid(&login(http, a).await) == *new && kid(&login(http, b).await) == *new }
    })
    .await;
    let fresh = login(&http, &b).await;
    for base in [&a, &b] {
        assert_eq!(
            me(&http, base, &owner.token).await,
            StatusCode::OK,
            "the old key still verifies on {base}"
        );
        assert_eq!(me(&http, base, &fresh).await, StatusCode::OK, "the new key verifies on {base}");
    }

    signing_keys::retire(pool, &old).await.unwrap();
    within("both nodes refuse the retired key's tokens", || {
        let (http, a, b, token) = (&http, &a, &b, &owner.token);
        async move {
            me(http, a, token).await == StatusCode::UNAUTHORIZED
                && me(http, b, token).await == StatusCode::UNAUTHORIZED
        }
    })
    .await;
    for base in [&a, &b] {
        assert_eq!(me(&http, base, &fresh).await, StatusCode::OK, "the new key's tokens live on {base}");
    }
    // The last live key cannot be retired; an unknown one is named.
    assert!(matches!(signing_keys::retire(pool, &new).await, Err(signing_keys::RetireError::Last(_))));
    assert!(matches!(
        signing_keys::retire(pool, "k-nothing").await,
        Err(signing_keys::RetireError::Unknown(_))
    ));
    second.stop().await;
    s.stop().await;
}
