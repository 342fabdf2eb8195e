//! Calls over HTTP and the cable, the ring timer against accepts, and a ringing call across a
//! restart.

use std::time::{Duration, Instant};

use parley_api::http::Server;
use parley_commands::{Actor, CommandContext};
use parley_tests::server::{serving, TestServer, User};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

async fn put(s: &TestServer, path: &str, user: &User) -> parley_tests::server::Answer {
    s.call(Method::PUT, path, Some(&user.token), None, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_rings_its_callees_is_answered_once_and_ends_with_its_last_participant() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let member = s.invite_member(&owner, "member@example.com").await;
    let outsider = s.invite_member(&owner, "outsider@example.com").await;
    let group = s.group(&owner, &[&member]).await;
    let mut cable = s.cable(Some(&member.token)).await;
    assert_eq!(cable.frame().await["type"], "welcome");
    assert_eq!(cable.subscribe("user", None, None).await["type"], "subscribed");

    let calls = format!("/api/v1/conversations/{group}/calls");
    let started = s.post(&calls, &owner.token, json!({"kind": "video"})).await;
    assert_eq!(started.status, StatusCode::CREATED, "{:?}", started.body);
    assert_eq!(started.data()["state"], "calling");
    let call = started.data()["id"].as_str().unwrap().to_owned();
    // One live call per conversation.
    let again = s.post(&calls, &member.token, json!({"kind": "audio"})).await;
    again.assert_error(409, "conflict");
    assert_eq!(again.body["details"]["call_id"], call.as_str());
    // The callee hears it ring on their own channel.
    let ringing = loop {
        let f = cable.frame().await;
        if f["type"] == "event" && f["event"]["event_type"] == "CallRinging" {
            break f;
        }
    };
    assert_eq!(ringing["event"]["data"]["call_id"], call.as_str());
    assert_eq!(ringing["event"]["data"]["initiator_id"], owner.id.as_str());
    // Bad input: a bad kind, a stranger, a non-member, someone not invited.
    s.post(&calls, &owner.token, json!({"kind": "hologram"})).await.assert_error(422, "validation_failed");
    let stranger = s.register("stranger@example.com").await;
    put(&s, &format!("{calls}/{call}/accept"), &stranger).await.assert_error(404, "not_found");
    put(&s, &format!("{calls}/{call}/accept"), &outsider).await.assert_error(404, "not_found");
    put(&s, &format!("{calls}/{call}/accept"), &owner).await.assert_error(404, "not_found");
    s.get(&format!("{calls}/active"), &outsider.token).await.assert_error(404, "not_found");

    let accepted = put(&s, &format!("{calls}/{call}/accept"), &member).await;
    assert_eq!(accepted.status, StatusCode::OK, "{:?}", accepted.body);
    assert_eq!(accepted.data()["state"], "active");
    assert!(accepted.data()["started_at"].is_string());
    put(&s, &format!("{calls}/{call}/accept"), &member).await.assert_error(409, "conflict");
    let live = s.get_at(&format!("{calls}/active"), &member.token, &accepted.position()).await;
    assert_eq!(live.data()["id"], call.as_str());

    // The member leaves: the caller is still in it. The caller leaves: it ends.
    let left = s.call(Method::DELETE, &format!("{calls}/{call}"), Some(&member.token), None, &[]).await;
    assert_eq!(left.data()["state"], "active", "{:?}", left.body);
    let ended = s.call(Method::DELETE, &format!("{calls}/{call}"), Some(&owner.token), None, &[]).await;
    assert_eq!(ended.data()["state"], "ended", "{:?}", ended.body);
    assert!(ended.data()["duration_s"].as_i64().is_some());
    let people = ended.data()["participants"].as_array().unwrap();
    assert!(people.iter().all(|p| p["state"] == "left" && p["left_at"].is_string()), "{people:?}");
    put(&s, &format!("{calls}/{call}/decline"), &member).await.assert_error(409, "conflict");
    s.get_at(&format!("{calls}/active"), &member.token, &ended.position())
        .await
        .assert_error(404, "not_found");
    let history = s.get_at(&calls, &member.token, &ended.position()).await;
    assert_eq!(history.data().as_array().unwrap().len(), 1);
    // A new call may start now.
    let next = s.post(&calls, &member.token, json!({"kind": "audio"})).await;
    assert_eq!(next.status, StatusCode::CREATED, "{:?}", next.body);
    s.stop().await;
}

/// The ring timer and an accept race for the same call, 100 times: each time exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_timer_and_an_accept_never_both_win() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let member = s.invite_member(&owner, "member@example.com").await;
    let group: Uuid = s.group(&owner, &[&member]).await.parse().unwrap();
    let account: Uuid = owner.account_id.parse().unwrap();
    let perms =
        parley_aggregates::permissions::permissions_of(&[parley_aggregates::permissions::OWNER.into()]);
    let caller = CommandContext::new(account, Actor::user(owner.id.parse().unwrap(), perms.clone()));
    let callee = CommandContext::new(account, Actor::user(member.id.parse().unwrap(), perms));
    let calls = s.t.app.calls.clone();
    let (mut accepted, mut missed) = (0, 0);
    for _ in 0..100 {
        let call = calls.start(&caller, group, "audio").await.unwrap().aggregate.id.unwrap();
        let (a, b) = (calls.clone(), calls.clone());
        let callee = callee.clone();
        let accept = tokio::spawn(async move { a.accept(&callee, group, call).await });
        let timer = tokio::spawn(async move { b.ring_out(account, call).await });
        let (accept, timer) = (accept.await.unwrap(), timer.await.unwrap().unwrap());
        let timer_won =
            timer.events.iter().any(|e| matches!(e, parley_aggregates::call::CallEvent::CallMissed { .. }));
        match accept {
            Ok(_) => {
                assert!(!timer_won, "an accepted call was also missed");
                accepted += 1;
                calls.hang_up(&caller, group, call).await.unwrap();
                let callee_ctx =
                    CommandContext::new(account, Actor::user(member.id.parse().unwrap(), Vec::new()));
                calls.hang_up(&callee_ctx, group, call).await.unwrap();
            }
            Err(e) => {
                assert!(timer_won, "the accept lost to nothing: {e}");
                assert!(e.to_string().contains("over"), "{e}");
                missed += 1;
            }
        }
    }
    assert_eq!(accepted + missed, 100);
    println!("accepted {accepted}, missed {missed}");
    s.stop().await;
}

/// Waits until GET `path` (at `position`) satisfies `check`.
async fn until(s: &TestServer, path: &str, token: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = s.get(path, token).await;
        if check(&a.body) {
            return a.body;
        }
        assert!(Instant::now() < deadline, "{path} never became as expected: {:?}", a.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A call rings while its server stops (handing its jobs back) and another starts: it still rings
/// out into `missed` once, and each callee gets one missed-call notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_ringing_across_a_restart_is_missed_once_with_one_notification_per_callee() {
    let mut s = TestServer::start_with(|c| c.call_ring_seconds = 2).await;
    let owner = s.register("owner@example.com").await;
    let bob = s.invite_member(&owner, "bob@example.com").await;
    let carol = s.invite_member(&owner, "carol@example.com").await;
    let group = s.group(&owner, &[&bob, &carol]).await;
    let calls = format!("/api/v1/conversations/{group}/calls");
    let started = s.post(&calls, &owner.token, json!({"kind": "audio"})).await;
    assert_eq!(started.status, StatusCode::CREATED, "{:?}", started.body);
    let call = started.data()["id"].as_str().unwrap().to_owned();
    // The server stops before the call rings out; another takes over on the same database.
    s.server.take().unwrap().stop().await;
    let server = Server::start(s.t.app.clone(), &serving(s.t.config.clone())).await.unwrap();
    s.base = format!("http://{}", server.addr);
    s.server = Some(server);
    let history = until(&s, &calls, &owner.token, |b| b["data"][0]["state"] == "missed").await;
    assert_eq!(history["data"][0]["id"], call.as_str());
    for callee in [&bob, &carol] {
        let told = until(&s, "/api/v1/notifications", &callee.token, |b| {
            b["data"].as_array().is_some_and(|n| n.iter().any(|n| n["kind"] == "missed_call"))
        })
        .await;
        let missed: Vec<&Value> =
            told["data"].as_array().unwrap().iter().filter(|n| n["kind"] == "missed_call").collect();
        assert_eq!(missed.len(), 1, "{told}");
    }
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM events WHERE event_type = 'CallMissed'")
        .fetch_one(s.t.app.store.pool())
        .await
        .unwrap();
    assert_eq!(n, 1, "missed once");
    s.stop().await;
}
