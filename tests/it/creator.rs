//! The creator platform on a real server: spaces, experiences, streams and access grants; a paid
//! stream from checkout to archive, its LiveKit join tokens checked by LiveKit's own SDK
//! (`livekit-server-sdk`'s TokenVerifier), Stripe's signed webhook granting once; concurrent
//! starts; bad input refused with nothing appended; a grant that expires losing access at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use parley_api::config::Secret;
use parley_tests::server::{TestServer, User};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

const LIVEKIT_KEY: &str = "APIparleytest";
const LIVEKIT_SECRET: &str = "a-livekit-secret-for-the-tests-0123456789";
const STRIPE_SECRET: &str = "whsec_parley_test_secret";

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.livekit_api_key = Some(LIVEKIT_KEY.into());
        c.livekit_api_secret = Some(Secret::new(LIVEKIT_SECRET));
        c.livekit_url = Some("wss://livekit.example.com".into());
        c.stripe_webhook_secret = Some(Secret::new(STRIPE_SECRET));
    })
    .await
}

fn id(a: &parley_tests::server::Answer) -> String {
    assert!(a.status.is_success(), "{} {:?}", a.status, a.body);
    a.data()["id"].as_str().expect("an id").to_owned()
}

/// `Stripe-Signature` for `body` at `t`, as Stripe signs.
fn stripe_signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn stripe(s: &TestServer, body: &Value, signature: Option<String>) -> (u16, Value) {
    let body = body.to_string();
    let mut request = s.http.post(format!("{}/api/v1/webhooks/stripe", s.base)).body(body.clone());
    if let Some(sig) = signature {
        request = request.header("stripe-signature", sig);
    }
    let answer = request.header("content-type", "application/json").send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

fn checkout(session: &str, experience: &str, user: &str, paid: bool) -> Value {
    json!({
        "id": format!("evt_{session}"),
        "type": "checkout.session.completed",
        "data": {"object": {
            "id": session,
            "payment_status": if paid { "paid" } else { "unpaid" },
            "metadata": {"experience_id": experience, "user_id": user}
        }}
    })
}

/// The claims LiveKit's own SDK finds in `token` (panics when it does not verify).
async fn livekit_claims(token: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/js/livekit_verify.mjs");
    let out = tokio::process::Command::new("node")
        .args([script, LIVEKIT_KEY, LIVEKIT_SECRET, token])
        .output()
        .await
        .expect("node runs (scripts/test installs the clients)");
    let claims: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert!(out.status.success(), "LiveKit's verifier refused the token: {claims}");
    claims
}

async fn head(s: &TestServer) -> String {
    s.t.head().await.to_string()
}

/// Polls `path` until `ready` holds of its data (the job worker runs in the background).
async fn until(s: &TestServer, path: &str, token: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = s.get(path, token).await;
        if a.status.is_success() && ready(a.data()) {
            return a.data().clone();
        }
        assert!(Instant::now() < deadline, "{path} never got there: {:?}", a.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn live_stream_experience(s: &TestServer, owner: &User, price: i64) -> (String, String) {
    let spaces = s.get_at("/api/v1/spaces", &owner.token, &owner.position).await;
    let primary = spaces.data()[0]["id"].as_str().unwrap().to_owned();
    let experience = id(&s
        .post(
            &format!("/api/v1/spaces/{primary}/experiences"),
            &owner.token,
            json!({"name": "Launch week", "experience_type": "live_stream", "price_cents": price, "currency": "USD",
                   "description": "<b>Live</b> every day", "published": true}),
        )
        .await);
    (primary, experience)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_stream_lives_from_checkout_to_archive() {
    let s = server().await;
    let owner = s.register("host@example.com").await;
    let viewer = s.invite_member(&owner, "viewer@example.com").await;

    // Every account has its primary space, inside the register answer's position.
    let spaces = s.get_at("/api/v1/spaces", &owner.token, &owner.position).await;
    assert_eq!(spaces.data().as_array().unwrap().len(), 1, "{:?}", spaces.body);
    assert_eq!(spaces.data()[0]["is_primary"], true);
    assert_eq!(spaces.data()[0]["slug"], "main");

    let (space, experience) = live_stream_experience(&s, &owner, 1999).await;
    let shown = s.get_at(&format!("/api/v1/experiences/{experience}"), &owner.token, &head(&s).await).await;
    assert_eq!(shown.data()["currency"], "usd");
    assert_eq!(shown.data()["description"], "Live every day", "HTML is stripped before storing");
    let counted = s.get_at(&format!("/api/v1/spaces/{space}"), &owner.token, &head(&s).await).await;
    assert_eq!(counted.data()["experiences_count"], 1);

    // Without a grant the viewer cannot tell it exists.
    let hidden = s.get_at(&format!("/api/v1/experiences/{experience}"), &viewer.token, &head(&s).await).await;
    hidden.assert_error(404, "not_found");

    // Stripe says the checkout was paid: access is granted once per session.
    let paid = checkout("cs_test_1", &experience, &viewer.id, true);
    let t = Utc::now().timestamp();
    let sign = |body: &Value| Some(stripe_signature(STRIPE_SECRET, t, &body.to_string()));
    let (status, answer) = stripe(&s, &paid, sign(&paid)).await;
    assert_eq!((status, &answer["data"]["granted"]), (200, &json!(true)), "{answer}");
    let (status, answer) = stripe(&s, &paid, sign(&paid)).await;
    assert_eq!(
        (status, &answer["data"]["granted"]),
        (200, &json!(false)),
        "a repeat grants nothing: {answer}"
    );
    let forged = stripe(&s, &paid, Some(stripe_signature("whsec_forged", t, &paid.to_string()))).await;
    assert_eq!(forged.0, 401, "{}", forged.1);
    assert_eq!(forged.1["code"], "unauthorized");
    let unpaid = checkout("cs_test_2", &experience, &viewer.id, false);
    assert_eq!(stripe(&s, &unpaid, sign(&unpaid)).await.1["data"]["granted"], false);
    let other = json!({"id": "evt_x", "type": "invoice.paid", "data": {"object": {}}});
    assert_eq!(stripe(&s, &other, sign(&other)).await.0, 200);
    let (grants,): (i64,) = sqlx::query_as("SELECT count(*) FROM events WHERE event_type = 'AccessGranted'")
        .fetch_one(s.t.app.store.pool())
        .await
        .unwrap();
    assert_eq!(grants, 1);
    let seen = s.get_at(&format!("/api/v1/experiences/{experience}"), &viewer.token, &head(&s).await).await;
    assert_eq!(seen.status, 200, "{:?}", seen.body);

    // A stream, live, joined, ended, archived.
    let scheduled = s
        .post(
            &format!("/api/v1/experiences/{experience}/streams"),
            &owner.token,
            json!({"title": "Day one", "starts_at": "2026-12-01T18:00:00Z", "max_participants": 100}),
        )
        .await;
    assert_eq!(scheduled.status, 201, "{:?}", scheduled.body);
    let stream = id(&scheduled);
    let room = scheduled.data()["room_name"].as_str().unwrap().to_owned();
    assert_eq!(scheduled.data()["state"], "scheduled");
    let early = s
        .call(
            Method::POST,
            &format!("/api/v1/streams/{stream}/join"),
            Some(&viewer.token),
            Some(json!({})),
            &[("x-min-position", &scheduled.position())],
        )
        .await;
    early.assert_error(409, "conflict");

    let live = s.post(&format!("/api/v1/streams/{stream}/start"), &owner.token, json!({})).await;
    assert_eq!(live.status, 200, "{:?}", live.body);
    assert_eq!(live.data()["state"], "live");
    assert_eq!(live.data()["room_name"], room, "the room is fixed at creation");
    assert!(live.data()["conversation_id"].is_string(), "the stream's chat opened: {:?}", live.body);
    s.post(&format!("/api/v1/streams/{stream}/start"), &owner.token, json!({}))
        .await
        .assert_error(409, "conflict");

    let (join_path, live_at) = (format!("/api/v1/streams/{stream}/join"), live.position());
    let join = |token: String| {
        let (path, at) = (join_path.clone(), live_at.clone());
        let s = &s;
        async move { s.call(Method::POST, &path, Some(&token), Some(json!({})), &[("x-min-position", &at)]).await }
    };
    // The stream's chat: open to whoever may see the stream, not to other members.
    let chat = live.data()["conversation_id"].as_str().unwrap().to_owned();
    let outsider = s.invite_member(&owner, "outsider@example.com").await;
    let said = s
        .post(
            &format!("/api/v1/conversations/{chat}/messages"),
            &viewer.token,
            json!({"body": "hello from the audience"}),
        )
        .await;
    assert_eq!(said.status, 201, "{:?}", said.body);
    let hosted = s
        .post(&format!("/api/v1/conversations/{chat}/messages"), &owner.token, json!({"body": "welcome"}))
        .await;
    assert_eq!(hosted.status, 201, "{:?}", hosted.body);
    let read =
        s.get_at(&format!("/api/v1/conversations/{chat}/messages"), &viewer.token, &hosted.position()).await;
    let bodies: Vec<&str> =
        read.data().as_array().unwrap().iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["welcome", "hello from the audience"]);
    s.post(&format!("/api/v1/conversations/{chat}/messages"), &outsider.token, json!({"body": "let me in"}))
        .await
        .assert_error(404, "not_found");
    s.get_at(&format!("/api/v1/conversations/{chat}/messages"), &outsider.token, &hosted.position())
        .await
        .assert_error(404, "not_found");
    // The viewer follows the chat live on the cable.
    let mut cable = s.cable(Some(&viewer.token)).await;
    assert_eq!(cable.frame().await["type"], "welcome");
    assert_eq!(cable.subscribe("conversation", Some(&chat), None).await["type"], "subscribed");
    s.post(&format!("/api/v1/conversations/{chat}/messages"), &owner.token, json!({"body": "live now"}))
        .await;
    let event = cable.events(1).await.remove(0);
    assert_eq!(event["event"]["data"]["body"], "live now");
    let mut outsider_cable = s.cable(Some(&outsider.token)).await;
    assert_eq!(outsider_cable.frame().await["type"], "welcome");
    assert_eq!(outsider_cable.subscribe("conversation", Some(&chat), None).await["type"], "rejected");

    // The viewer watches: the stream's channel counts them (the host, watching too, is not
    // counted).
    let mut watching = s.cable(Some(&viewer.token)).await;
    assert_eq!(watching.frame().await["type"], "welcome");
    assert_eq!(watching.subscribe("stream", Some(&stream), None).await["type"], "subscribed");
    let counted = watching.frame().await;
    assert_eq!(
        (counted["type"].as_str(), counted["count"].as_i64()),
        (Some("viewer_update"), Some(1)),
        "{counted}"
    );
    let mut hosting_tab = s.cable(Some(&owner.token)).await;
    assert_eq!(hosting_tab.frame().await["type"], "welcome");
    assert_eq!(hosting_tab.subscribe("stream", Some(&stream), None).await["type"], "subscribed");
    assert_eq!(hosting_tab.frame().await["count"], 1, "the host is no viewer");
    let shown = s.get(&format!("/api/v1/streams/{stream}"), &owner.token).await;
    assert_eq!(shown.data()["viewer_count"], 1);

    let joined = join(viewer.token.clone()).await;
    assert_eq!(joined.status, 200, "{:?}", joined.body);
    assert_eq!(joined.data()["room"], room);
    assert_eq!(joined.data()["url"], "wss://livekit.example.com");
    let claims = livekit_claims(joined.data()["token"].as_str().unwrap()).await;
    assert_eq!(claims["sub"], json!(viewer.id));
    assert_eq!(claims["iss"], LIVEKIT_KEY);
    assert_eq!(claims["video"]["roomJoin"], true);
    assert_eq!(claims["video"]["room"], json!(room));
    assert_eq!(claims["video"]["canPublish"], false, "viewers do not publish");
    assert_eq!(claims["video"]["canSubscribe"], true);
    let hours = (claims["exp"].as_i64().unwrap() - claims["nbf"].as_i64().unwrap()) / 3600;
    assert_eq!(hours, 6);
    let hosting = join(owner.token.clone()).await;
    let claims = livekit_claims(hosting.data()["token"].as_str().unwrap()).await;
    assert_eq!(claims["video"]["canPublish"], true, "hosts publish");

    // The peak is kept as the nodes count (once a second): wait for it before ending.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (peak,): (Option<i64>,) =
            sqlx::query_as("SELECT max(peak) FROM stream_viewer_peaks WHERE stream_id = $1::uuid")
                .bind(&stream)
                .fetch_one(s.t.app.store.pool())
                .await
                .unwrap();
        if peak == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "the peak was never kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ended = s.post(&format!("/api/v1/streams/{stream}/end"), &owner.token, json!({})).await;
    assert_eq!(ended.status, 200, "{:?}", ended.body);
    assert_eq!(ended.data()["state"], "ended");
    assert_eq!(ended.data()["peak_viewers"], 1, "the end carries the peak into the log");
    s.post(&format!("/api/v1/streams/{stream}/end"), &owner.token, json!({}))
        .await
        .assert_error(409, "conflict");
    s.post(&format!("/api/v1/streams/{stream}/start"), &owner.token, json!({}))
        .await
        .assert_error(409, "conflict");
    let archived =
        until(&s, &format!("/api/v1/streams/{stream}"), &owner.token, |d| d["archived_at"].is_string()).await;
    assert_eq!(archived["state"], "ended");
    let counted = s.get_at(&format!("/api/v1/experiences/{experience}"), &owner.token, &head(&s).await).await;
    assert_eq!(counted.data()["streams_count"], 1);
    assert_eq!(counted.data()["active_grants"], 1);
    let popular = s.get_at("/api/v1/experiences/popular", &viewer.token, &head(&s).await).await;
    assert_eq!(popular.data()[0]["id"], json!(experience));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_concurrent_starts_one_wins_and_the_other_is_refused() {
    let s = server().await;
    let owner = s.register("host@example.com").await;
    let (_, experience) = live_stream_experience(&s, &owner, 0).await;
    for round in 0..10 {
        let stream = id(&s
            .post(
                &format!("/api/v1/experiences/{experience}/streams"),
                &owner.token,
                json!({"title": format!("Round {round}"), "starts_at": "2026-12-01T18:00:00Z"}),
            )
            .await);
        let path = format!("/api/v1/streams/{stream}/start");
        let (a, b) =
            tokio::join!(s.post(&path, &owner.token, json!({})), s.post(&path, &owner.token, json!({})));
        let mut statuses = [a.status.as_u16(), b.status.as_u16()];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}: {:?} {:?}", a.body, b.body);
    }
    let (started,): (i64,) = sqlx::query_as("SELECT count(*) FROM events WHERE event_type = 'StreamStarted'")
        .fetch_one(s.t.app.store.pool())
        .await
        .unwrap();
    assert_eq!(started, 10, "one start each, one chat each");
    s.stop().await;
}

/// A request, by whom, and the error it must get: method, path, body, code, status, sender.
type Case<'a> = (Method, String, Option<Value>, &'static str, u16, &'a User);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_nothing_appended() {
    let s = server().await;
    let owner = s.register("host@example.com").await;
    let member = s.invite_member(&owner, "member@example.com").await;
    let (space, experience) = live_stream_experience(&s, &owner, 0).await;
    let stream = id(&s
        .post(
            &format!("/api/v1/experiences/{experience}/streams"),
            &owner.token,
            json!({"title": "Later", "starts_at": "2026-12-01T18:00:00Z"}),
        )
        .await);
    let taken = id(&s.post("/api/v1/spaces", &owner.token, json!({"name": "Taken", "slug": "taken"})).await);
    let before = s.events().await;
    let experiences = format!("/api/v1/spaces/{space}/experiences");
    let cases: Vec<Case<'_>> = vec![
        (
            Method::POST,
            "/api/v1/spaces".into(),
            Some(json!({"name": "Again", "slug": "taken"})),
            "conflict",
            409,
            &owner,
        ),
        (
            Method::POST,
            "/api/v1/spaces".into(),
            Some(json!({"name": "Bad", "slug": "Bad Slug"})),
            "validation_failed",
            422,
            &owner,
        ),
        (
            Method::POST,
            "/api/v1/spaces".into(),
            Some(json!({"name": "Mine", "slug": "mine"})),
            "forbidden",
            403,
            &member,
        ),
        (
            Method::PATCH,
            format!("/api/v1/spaces/{space}"),
            Some(json!({"slug": "taken"})),
            "conflict",
            409,
            &owner,
        ),
        (Method::DELETE, format!("/api/v1/spaces/{space}"), None, "conflict", 409, &owner),
        (
            Method::POST,
            experiences.clone(),
            Some(json!({"name": "Neg", "experience_type": "course", "price_cents": -1})),
            "validation_failed",
            422,
            &owner,
        ),
        (
            Method::POST,
            experiences.clone(),
            Some(json!({"name": "Dear", "experience_type": "course", "price_cents": 1_000_000})),
            "validation_failed",
            422,
            &owner,
        ),
        (
            Method::POST,
            experiences.clone(),
            Some(json!({"name": "Odd", "experience_type": "webinar", "price_cents": 0})),
            "validation_failed",
            422,
            &owner,
        ),
        (Method::POST, format!("/api/v1/streams/{stream}/end"), Some(json!({})), "conflict", 409, &owner),
        (Method::POST, format!("/api/v1/streams/{stream}/join"), Some(json!({})), "not_found", 404, &member),
        (Method::GET, format!("/api/v1/experiences/{experience}"), None, "not_found", 404, &member),
        (
            Method::POST,
            "/api/v1/access_grants".into(),
            Some(
                json!({"user_id": member.id, "experience_id": experience, "expires_at": "2020-01-01T00:00:00Z"}),
            ),
            "validation_failed",
            422,
            &owner,
        ),
    ];
    for (method, path, body, code, status, who) in cases {
        let a = s.call(method.clone(), &path, Some(&who.token), body, &[]).await;
        assert_eq!(a.status.as_u16(), status, "{method} {path}: {:?}", a.body);
        a.assert_error(status, code);
    }
    for (path, body) in [
        (format!("/api/v1/spaces/{space}"), json!({"name": "Stale"})),
        (format!("/api/v1/experiences/{experience}"), json!({"name": "Stale"})),
    ] {
        let stale =
            s.call(Method::PATCH, &path, Some(&owner.token), Some(body), &[("if-match", "\"99\"")]).await;
        stale.assert_error(412, "precondition_failed");
    }
    assert_eq!(s.events().await, before, "nothing was appended");
    // The taken slug is still its space's.
    let still = s.get_at(&format!("/api/v1/spaces/{taken}"), &owner.token, &head(&s).await).await;
    assert_eq!(still.data()["slug"], "taken");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_grant_loses_access_on_the_next_request_and_its_expiry_is_recorded() {
    let s = server().await;
    let owner = s.register("host@example.com").await;
    let viewer = s.invite_member(&owner, "viewer@example.com").await;
    let (_, experience) = live_stream_experience(&s, &owner, 0).await;
    let expires_at = Utc::now() + chrono::Duration::hours(1);
    let granted = s
        .post(
            "/api/v1/access_grants",
            &owner.token,
            json!({"user_id": viewer.id, "experience_id": experience, "expires_at": expires_at}),
        )
        .await;
    assert_eq!(granted.status, 201, "{:?}", granted.body);
    let grant = id(&granted);
    let path = format!("/api/v1/experiences/{experience}");
    assert_eq!(s.get_at(&path, &viewer.token, &granted.position()).await.status, 200);

    // Two hours later (the server's clock), before any job ran: no access.
    s.t.app.store.use_clock(Arc::new(|| Utc::now() + chrono::Duration::hours(2)));
    s.get(&path, &viewer.token).await.assert_error(404, "not_found");
    let listed = s.get(&format!("/api/v1/access_grants?user_id={}", viewer.id), &owner.token).await;
    assert_eq!(listed.data()[0]["status"], "expired", "{:?}", listed.body);

    // The expiry job was set for the grant's time; run it now: the log records the expiry.
    let (run_at,): (chrono::DateTime<Utc>,) = sqlx::query_as(
        "SELECT run_at FROM jobs WHERE kind = 'access_grants.expire' AND args->>'grant_id' = $1",
    )
    .bind(&grant)
    .fetch_one(s.t.app.store.pool())
    .await
    .unwrap();
    assert!((run_at - expires_at).num_seconds().abs() <= 1, "{run_at} vs {expires_at}");
    sqlx::query("UPDATE jobs SET run_at = now() WHERE kind = 'access_grants.expire'")
        .execute(s.t.app.store.pool())
        .await
        .unwrap();
    s.t.app.jobs.wake().await;
    until(&s, &format!("/api/v1/access_grants?user_id={}", viewer.id), &owner.token, |d| {
        d[0]["ended_at"].is_string()
    })
    .await;
    let (expired,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM events WHERE event_type = 'AccessGrantExpired'")
            .fetch_one(s.t.app.store.pool())
            .await
            .unwrap();
    assert_eq!(expired, 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_opened_before_spaces_get_their_primary_space_once() {
    use parley_aggregates::account::{Account, AccountCommand};
    use parley_aggregates::values::Name;
    use parley_commands::{Actor, CommandContext};

    let s = server().await;
    let owner = s.register("new@example.com").await;
    // An account opened the old way: no space.
    let (account_id, owner_id) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let ctx = CommandContext::new(account_id, Actor::system());
    let open = AccountCommand::Open { account_id, name: Name::parse("Old").unwrap(), owner_id };
    s.t.app.commands.dispatcher().execute::<Account>(&ctx, &account_id.to_string(), open).await.unwrap();
    let job = parley_commands::creator::Creator::open_primary_spaces_job();
    let mut conn = s.t.app.store.pool().acquire().await.unwrap();
    s.t.app.jobs.enqueue(&mut conn, &job).await.unwrap();
    drop(conn);
    s.t.app.jobs.wake().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let count = |account: uuid::Uuid| {
        let pool = s.t.app.store.pool().clone();
        async move {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM events WHERE event_type = 'SpaceCreated' AND account_id = $1",
            )
            .bind(account)
            .fetch_one(&pool)
            .await
            .unwrap();
            n
        }
    };
    while count(account_id).await == 0 {
        assert!(Instant::now() < deadline, "the old account never got its primary space");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(account_id).await, 1);
    assert_eq!(count(owner.account_id.parse().unwrap()).await, 1, "a new account's is not opened twice");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilding_the_creator_read_model_reproduces_every_answer() {
    let s = server().await;
    let owner = s.register("host@example.com").await;
    let viewer = s.invite_member(&owner, "viewer@example.com").await;
    let (space, experience) = live_stream_experience(&s, &owner, 1500).await;
    let other = id(&s.post("/api/v1/spaces", &owner.token, json!({"name": "Other", "slug": "other"})).await);
    let course = id(&s
        .post(
            &format!("/api/v1/spaces/{other}/experiences"),
            &owner.token,
            json!({"name": "Course", "experience_type": "course", "price_cents": 0}),
        )
        .await);
    let patched = s
        .call(
            Method::PATCH,
            &format!("/api/v1/experiences/{course}"),
            Some(&owner.token),
            Some(json!({"name": "Course, renamed", "description": "<i>new</i>", "published": true})),
            &[],
        )
        .await;
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    let mut streams = Vec::new();
    for title in ["Ended", "Live", "Later"] {
        let stream = id(&s
            .post(
                &format!("/api/v1/experiences/{experience}/streams"),
                &owner.token,
                json!({"title": title, "starts_at": "2026-12-01T18:00:00Z", "max_participants": 50}),
            )
            .await);
        streams.push(stream);
    }
    for stream in &streams[..2] {
        s.post(&format!("/api/v1/streams/{stream}/start"), &owner.token, json!({})).await;
    }
    s.post(&format!("/api/v1/streams/{}/end", streams[0]), &owner.token, json!({})).await;
    let granted = id(&s
        .post(
            "/api/v1/access_grants",
            &owner.token,
            json!({"user_id": viewer.id, "experience_id": experience}),
        )
        .await);
    s.post("/api/v1/access_grants", &owner.token, json!({"user_id": viewer.id, "experience_id": course}))
        .await;
    s.call(Method::DELETE, &format!("/api/v1/access_grants/{granted}"), Some(&owner.token), None, &[]).await;
    until(&s, &format!("/api/v1/streams/{}", streams[0]), &owner.token, |d| d["archived_at"].is_string())
        .await;

    let reads = [
        "/api/v1/spaces".to_owned(),
        format!("/api/v1/spaces/{space}"),
        format!("/api/v1/spaces/{other}"),
        format!("/api/v1/spaces/{space}/experiences"),
        format!("/api/v1/spaces/{other}/experiences"),
        format!("/api/v1/experiences/{experience}"),
        format!("/api/v1/experiences/{course}"),
        format!("/api/v1/experiences/{experience}/streams"),
        format!("/api/v1/streams/{}", streams[0]),
        format!("/api/v1/streams/{}", streams[1]),
        "/api/v1/access_grants".to_owned(),
        "/api/v1/experiences/popular".to_owned(),
    ];
    let at = head(&s).await;
    let mut before = Vec::new();
    for path in &reads {
        let a = s.get_at(path, &owner.token, &at).await;
        assert_eq!(a.status, 200, "{path}: {:?}", a.body);
        before.push(a.body);
    }
    let accepted = s
        .call(Method::POST, "/api/v1/admin/projections/creator/rebuild", Some(&owner.token), None, &[])
        .await;
    assert_eq!(accepted.status, 202, "{:?}", accepted.body);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = s.get("/api/v1/admin/projections", &owner.token).await;
        let creator: Vec<Value> =
            listed.data().as_array().unwrap().iter().filter(|p| p["name"] == "creator").cloned().collect();
        if creator.len() == 1 && creator[0]["generation"] == 2 && creator[0]["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "the rebuild did not take over: {creator:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (path, before) in reads.iter().zip(before) {
        assert_eq!(s.get_at(path, &owner.token, &at).await.body, before, "{path} after the rebuild");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_host_stays_away_is_ended_by_its_job() {
    let s = TestServer::start_with(|c| c.stream_abandon_seconds = 1).await;
    let owner = s.register("host@example.com").await;
    let (_, experience) = live_stream_experience(&s, &owner, 0).await;
    let stream = id(&s
        .post(
            &format!("/api/v1/experiences/{experience}/streams"),
            &owner.token,
            json!({"title": "Left running", "starts_at": "2026-12-01T18:00:00Z"}),
        )
        .await);
    // The host connected (online) while it went live.
    let mut cable = s.cable(Some(&owner.token)).await;
    assert_eq!(cable.frame().await["type"], "welcome");
    let live = s.post(&format!("/api/v1/streams/{stream}/start"), &owner.token, json!({})).await;
    assert_eq!(live.status, 200, "{:?}", live.body);
    // The check is set for a second after the start; while the host is connected it looks again
    // later. Its run time is moved to now to drive it, twice: once connected, once gone.
    // (The creator_timers process manager sets it as the start commits.)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (jobs,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM jobs WHERE kind = 'streams.end_abandoned'")
                .fetch_one(s.t.app.store.pool())
                .await
                .unwrap();
        if jobs >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the abandoned-stream check was never set");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drive = || async {
        sqlx::query("UPDATE jobs SET run_at = now() WHERE kind = 'streams.end_abandoned' AND state IN ('scheduled', 'available')")
            .execute(s.t.app.store.pool())
            .await
            .unwrap();
        s.t.app.jobs.wake().await;
    };
    drive().await;
    // It ran and looked again later (the host is here): a newer check is scheduled, and the
    // stream is still live.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (done, waiting): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 'completed'), count(*) FILTER (WHERE state IN ('scheduled', 'available')) \
             FROM jobs WHERE kind = 'streams.end_abandoned'",
        )
        .fetch_one(s.t.app.store.pool())
        .await
        .unwrap();
        if done >= 1 && waiting >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the check did not run and look again ({done} done, {waiting} waiting)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let still = s.get_at(&format!("/api/v1/streams/{stream}"), &owner.token, &head(&s).await).await;
    assert_eq!(still.data()["state"], "live");
    // The host leaves; a second later the check ends the stream.
    drop(cable);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (online,): (bool,) =
            sqlx::query_as("SELECT EXISTS (SELECT 1 FROM presence_connections WHERE user_id = $1::uuid)")
                .bind(&owner.id)
                .fetch_one(s.t.app.store.pool())
                .await
                .unwrap();
        if !online {
            break;
        }
        assert!(Instant::now() < deadline, "the host never went offline");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query(
        "UPDATE presence_last_seen SET last_seen_at = now() - interval '1 minute' WHERE user_id = $1::uuid",
    )
    .bind(&owner.id)
    .execute(s.t.app.store.pool())
    .await
    .unwrap();
    drive().await;
    let ended =
        until(&s, &format!("/api/v1/streams/{stream}"), &owner.token, |d| d["state"] == "ended").await;
    assert!(ended["ended_at"].is_string());
    let (by,): (Option<String>,) = sqlx::query_as(
        "SELECT payload->>'ended_by' FROM events WHERE event_type = 'StreamEnded' AND stream_id = $1",
    )
    .bind(&stream)
    .fetch_one(s.t.app.store.pool())
    .await
    .unwrap();
    assert_eq!(by, None, "ended by the job, not by anyone");
    s.stop().await;
}
