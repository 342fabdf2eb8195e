//! The OpenAPI document, checked by an outside fuzzer: Schemathesis (from PyPI, installed by
//! `scripts/test` into `target/schemathesis`) generates requests from `/api/v1/openapi.json` of a
//! running server with a valid token and checks every answer: no 5xx, every status documented
//! for its operation, every body valid against its schema. The account holds data first, so
//! the lists answer rows (checked against their schemas) and not only empty pages.

use std::path::PathBuf;

use parley_tests::server::TestServer;
use serde_json::json;

/// The Schemathesis command: `SCHEMATHESIS`, the test script's venv, or one on `PATH`.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("SCHEMATHESIS") {
        return path.into();
    }
    let venv = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/schemathesis/bin/schemathesis"));
    if venv.exists() {
        return venv;
    }
    PathBuf::from("schemathesis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    // The auth endpoints' per-IP limit would answer most generated registrations 429.
    // With LiveKit and Stripe configured: unconfigured, joining a stream is 503 by design,
    // which the fuzzer rightly counts as a server error.
    let s = TestServer::start_with(|c| {
        c.auth_per_minute = 100_000;
        c.livekit_api_key = Some("APIschemathesis".into());
        c.livekit_api_secret = Some(parley_api::config::Secret::new("a-livekit-secret-for-schemathesis-000"));
        c.stripe_webhook_secret = Some(parley_api::config::Secret::new("whsec_schemathesis"));
    })
    .await;
    let owner = s.register("owner@example.com").await;
    let member = s.invite_member(&owner, "member@example.com").await;
    let group = s.group(&owner, &[&member]).await;
    let posted = s
        .post(&format!("/api/v1/conversations/{group}/messages"), &member.token, json!({"body": "hi @owner"}))
        .await;
    assert_eq!(posted.status, 201);
    let message_id = posted.data()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        s.post("/api/v1/reactions", &owner.token, json!({"message_id": message_id, "emoji": "👍"}))
            .await
            .status,
        201
    );
    assert_eq!(
        s.post(
            "/api/v1/roles",
            &owner.token,
            json!({"name": "moderator", "permissions": ["messages.moderate"]})
        )
        .await
        .status,
        201
    );
    assert_eq!(
        s.post("/api/v1/api_keys", &owner.token, json!({"name": "ci", "permissions": ["users.view"]}))
            .await
            .status,
        201
    );
    assert_eq!(
        s.post("/api/v1/invitations", &owner.token, json!({"email": "later@example.com", "role": "member"}))
            .await
            .status,
        201
    );
    assert_eq!(
        s.post("/api/v1/webhooks/incoming", &owner.token, json!({"conversation_id": group, "name": "ci"}))
            .await
            .status,
        201
    );

    // Schemathesis keeps a cache of what it found in its working folder: under target/.
    let workdir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/schemathesis-run"));
    std::fs::create_dir_all(&workdir).unwrap();
    let space = s.post("/api/v1/spaces", &owner.token, json!({"name": "Shows", "slug": "shows"})).await;
    assert_eq!(space.status, 201, "{:?}", space.body);
    let space = space.data()["id"].as_str().unwrap().to_owned();
    let experience = s
        .post(
            &format!("/api/v1/spaces/{space}/experiences"),
            &owner.token,
            json!({"name": "Launch", "experience_type": "live_stream", "price_cents": 500}),
        )
        .await;
    let experience = experience.data()["id"].as_str().unwrap().to_owned();
    let stream = s
        .post(
            &format!("/api/v1/experiences/{experience}/streams"),
            &owner.token,
            json!({"title": "Day one", "starts_at": "2026-12-01T10:00:00Z"}),
        )
        .await;
    assert_eq!(stream.status, 201, "{:?}", stream.body);
    let granted = s
        .post(
            "/api/v1/access_grants",
            &owner.token,
            json!({"user_id": member.id, "experience_id": experience}),
        )
        .await;
    assert_eq!(granted.status, 201, "{:?}", granted.body);

    let output = tokio::process::Command::new(schemathesis())
        .current_dir(&workdir)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", s.base))
        .args(["--header", &format!("Authorization: Bearer {}", owner.token)])
        .args(["--checks", "not_a_server_error,status_code_conformance,response_schema_conformance"])
        // Logging out would end the token the run uses.
        .args(["--exclude-path", "/api/v1/auth/logout"])
        .args(["--phases", "examples,coverage,fuzzing", "--max-examples", "30", "--workers", "2"])
        .args(["--seed", "16"])
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run Schemathesis ({e}): scripts/test installs it into target/schemathesis")
        });
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "Schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // `N generated, N passed`: at least 1,000 cases ran.
    let generated: u64 = report
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()) && l.contains(" generated,"))
        .find_map(|l| l.split_once(" generated").map(|(n, _)| n.trim().to_owned()))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no case count in the report:\n{report}"));
    assert!(generated >= 1000, "only {generated} cases generated:\n{report}");
}

/// `/docs` in Debian's headless Chromium: Swagger UI, served from the binary, renders every
/// operation of the document, and the page loads nothing from another origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_renders_every_operation_offline_in_a_real_browser() {
    let s = TestServer::start().await;
    let document: serde_json::Value =
        reqwest::get(format!("{}/api/v1/openapi.json", s.base)).await.unwrap().json().await.unwrap();
    let operations: usize =
        document["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    assert!(operations >= 60, "{operations} operations");

    let mut browser = parley_tests::browser::Browser::start(&s.base).await;
    browser.open("/docs").await;
    let shown = browser
        .run(json!({"op": "eval", "js": "new Promise(done => { const start = Date.now(); (function poll() { \
            const n = document.querySelectorAll('.opblock').length; \
            if (n > 0 || Date.now() - start > 20000) done(n); else setTimeout(poll, 100); })(); })"}))
        .await;
    assert_eq!(shown["value"].as_u64(), Some(operations as u64), "{shown}");
    let origins = browser
        .run(json!({"op": "eval", "js": "[location.href, ...performance.getEntriesByType('resource').map(e => e.name)]\
            .filter(u => !u.startsWith(location.origin))"}))
        .await;
    assert_eq!(origins["value"], json!([]), "the page fetched from elsewhere");
    let errors = browser.run(json!({"op": "errors"})).await;
    assert_eq!(errors["errors"], json!([]), "{errors}");
}
