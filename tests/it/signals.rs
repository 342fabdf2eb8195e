//! Signals between users on different servers: WebRTC offers, answers and ICE candidates, media
//! changes and typing, relayed through PostgreSQL `NOTIFY` (a large offer through the `signals`
//! table), to participants only.

use parley_tests::server::{Cable, TestServer, User};
use serde_json::{json, Value};

async fn cable_at(addr: &str, user: &User) -> Cable {
    let url = format!("ws://{addr}/api/v1/cable?token={}", user.token);
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
    let mut cable = Cable { ws };
    assert_eq!(cable.frame().await["type"], "welcome");
    cable
}

/// The next frame that is not a pong.
async fn next(cable: &mut Cable) -> Value {
    loop {
        let f = cable.frame().await;
        if f["type"] != "pong" {
            return f;
        }
    }
}

/// Sends a ping and returns every frame that came before its pong.
async fn before_pong(cable: &mut Cable) -> Vec<Value> {
    cable.send(json!({"command": "ping"})).await;
    let mut before = Vec::new();
    loop {
        let f = cable.frame().await;
        if f["type"] == "pong" {
            return before;
        }
        before.push(f);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_answers_and_candidates_cross_servers_to_participants_only() {
    let s = TestServer::start().await;
    let other = s.second_server(|_| {}).await;
    let (a, b) = (s.base.trim_start_matches("http://").to_owned(), other.addr.to_string());
    let alice = s.register("alice@example.com").await;
    let bob = s.invite_member(&alice, "bob@example.com").await;
    let carol = s.invite_member(&alice, "carol@example.com").await;
    let group = s.group(&alice, &[&bob]).await;
    let started =
        s.post(&format!("/api/v1/conversations/{group}/calls"), &alice.token, json!({"kind": "video"})).await;
    assert_eq!(started.status, 201, "{:?}", started.body);
    let call = started.data()["id"].as_str().unwrap().to_owned();
    // Rung in the background: done before the log is counted below.
    s.rung(&call).await;
    let mut alice_ws = cable_at(&a, &alice).await;
    let mut bob_ws = cable_at(&b, &bob).await;
    let mut carol_ws = cable_at(&b, &carol).await;

    // A 20 KiB offer from one server to the other (too large for a NOTIFY payload).
    let sdp = "v=0 ".repeat(5 * 1024);
    alice_ws
        .send(json!({"command": "signal", "call_id": call, "to_user_id": bob.id, "signal": {"type": "offer", "sdp": sdp}}))
        .await;
    let offer = next(&mut bob_ws).await;
    assert_eq!(offer["type"], "signal", "{offer}");
    assert_eq!(offer["from_user_id"], alice.id.as_str());
    assert_eq!(offer["call_id"], call.as_str());
    assert_eq!(offer["signal"]["sdp"].as_str().unwrap().len(), sdp.len());
    // The answer and a candidate come back.
    bob_ws
        .send(json!({"command": "signal", "call_id": call, "to_user_id": alice.id, "signal": {"type": "answer", "sdp": "ok"}}))
        .await;
    bob_ws
        .send(json!({"command": "signal", "call_id": call, "to_user_id": alice.id, "signal": {"type": "ice", "candidate": "c1"}}))
        .await;
    let answer = next(&mut alice_ws).await;
    let ice = next(&mut alice_ws).await;
    assert_eq!(
        (answer["signal"]["type"].as_str(), ice["signal"]["type"].as_str()),
        (Some("answer"), Some("ice"))
    );
    assert_eq!(ice["from_user_id"], bob.id.as_str());
    // Media state and typing reach the others, never stored.
    let before = s.events().await;
    bob_ws.send(json!({"command": "call_media", "call_id": call, "muted": true})).await;
    let media = next(&mut alice_ws).await;
    assert_eq!(
        (media["type"].as_str(), media["user_id"].as_str(), media["muted"].as_bool()),
        (Some("call_media"), Some(bob.id.as_str()), Some(true))
    );
    bob_ws.send(json!({"command": "typing", "conversation_id": group})).await;
    let typing = next(&mut alice_ws).await;
    assert_eq!(
        (typing["type"].as_str(), typing["user_id"].as_str()),
        (Some("typing"), Some(bob.id.as_str()))
    );
    assert_eq!(s.events().await, before, "signals are not events");

    // Refused, each with an error frame, the connection staying up.
    let refusals = [
        (
            json!({"command": "signal", "call_id": call, "to_user_id": carol.id, "signal": {"type": "offer"}}),
            "forbidden",
        ),
        (
            json!({"command": "signal", "call_id": call, "to_user_id": bob.id, "signal": {"type": "hello"}}),
            "bad_request",
        ),
        (
            json!({"command": "signal", "call_id": group, "to_user_id": bob.id, "signal": {"type": "offer"}}),
            "not_found",
        ),
        (
            json!({"command": "signal", "call_id": call, "to_user_id": bob.id, "signal": {"type": "offer", "sdp": "x".repeat(70 * 1024)}}),
            "payload_too_large",
        ),
        (json!({"command": "dance"}), "bad_request"),
    ];
    for (command, code) in refusals {
        alice_ws.send(command).await;
        let refused = next(&mut alice_ws).await;
        assert_eq!(
            (refused["type"].as_str(), refused["code"].as_str()),
            (Some("error"), Some(code)),
            "{refused}"
        );
    }
    carol_ws.send(json!({"command": "signal", "call_id": call, "to_user_id": alice.id, "signal": {"type": "offer"}})).await;
    assert_eq!(next(&mut carol_ws).await["code"], "forbidden", "a non-participant cannot signal");
    carol_ws.send(json!({"command": "typing", "conversation_id": group})).await;
    assert_eq!(next(&mut carol_ws).await["code"], "not_found", "nor type where she is no member");
    // Carol, on bob's server, heard none of it; alice and bob are still connected.
    assert!(before_pong(&mut carol_ws).await.is_empty());
    assert!(before_pong(&mut alice_ws).await.is_empty());
    assert!(before_pong(&mut bob_ws).await.is_empty());
    other.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_is_online_while_any_tab_lives_and_only_those_sharing_a_conversation_hear_of_it() {
    let s = TestServer::start().await;
    let other = s.second_server(|_| {}).await;
    let (a, b) = (s.base.trim_start_matches("http://").to_owned(), other.addr.to_string());
    let alice = s.register("alice@example.com").await;
    let bob = s.invite_member(&alice, "bob@example.com").await;
    let carol = s.invite_member(&alice, "carol@example.com").await;
    s.group(&alice, &[&bob]).await;
    // Bob and Carol follow their user channels on the other server.
    let mut bob_ws = cable_at(&b, &bob).await;
    assert_eq!(bob_ws.subscribe("user", None, None).await["type"], "subscribed");
    let roster = next(&mut bob_ws).await;
    assert_eq!(roster["type"], "presence_roster");
    assert_eq!(roster["online_user_ids"], json!([]), "{roster}");
    let mut carol_ws = cable_at(&b, &carol).await;
    assert_eq!(carol_ws.subscribe("user", None, None).await["type"], "subscribed");
    assert_eq!(next(&mut carol_ws).await["type"], "presence_roster");

    // Alice opens a tab: online. A second tab: nothing new.
    let mut tab1 = cable_at(&a, &alice).await;
    let online = next(&mut bob_ws).await;
    assert_eq!(
        (online["type"].as_str(), online["user_id"].as_str(), online["status"].as_str()),
        (Some("presence"), Some(alice.id.as_str()), Some("online")),
        "{online}"
    );
    let profile = s.get(&format!("/api/v1/users/{}", alice.id), &bob.token).await;
    assert_eq!(profile.data()["online"], true, "{:?}", profile.body);
    let mut tab2 = cable_at(&a, &alice).await;
    assert!(before_pong(&mut tab2).await.is_empty());
    // The roster of a new subscriber names her.
    let mut bob_again = cable_at(&b, &bob).await;
    bob_again.subscribe("user", None, None).await;
    assert_eq!(next(&mut bob_again).await["online_user_ids"], json!([alice.id]));
    // One tab closes: still online. The last closes: offline, with when she was last seen.
    tab1.ws.close(None).await.unwrap();
    drop(tab1);
    connections(&s, &alice, 1).await;
    assert!(before_pong(&mut tab2).await.is_empty());
    tab2.ws.close(None).await.unwrap();
    drop(tab2);
    let offline = next(&mut bob_ws).await;
    assert_eq!(
        (offline["status"].as_str(), offline["user_id"].as_str()),
        (Some("offline"), Some(alice.id.as_str())),
        "{offline}"
    );
    assert!(offline["last_seen_at"].is_string(), "{offline}");
    connections(&s, &alice, 0).await;
    assert!(before_pong(&mut bob_ws).await.is_empty(), "one offline, once");
    let profile = s.get(&format!("/api/v1/users/{}", alice.id), &bob.token).await;
    assert_eq!(profile.data()["online"], false, "{:?}", profile.body);
    assert_eq!(profile.data()["last_seen_at"], offline["last_seen_at"], "{:?}", profile.body);
    // Carol shares no conversation with Alice: she heard nothing.
    assert!(before_pong(&mut carol_ws).await.is_empty());
    other.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tabs_closing_at_once_and_a_server_that_stops_take_their_users_offline_at_once() {
    // The TTL (35 s) is far longer than a frame's wait (10 s): what arrives was not swept.
    let s = TestServer::start().await;
    let other = s.second_server(|_| {}).await;
    let (a, b) = (s.base.trim_start_matches("http://").to_owned(), other.addr.to_string());
    let alice = s.register("alice@example.com").await;
    let bob = s.invite_member(&alice, "bob@example.com").await;
    let dave = s.invite_member(&alice, "dave@example.com").await;
    s.group(&alice, &[&bob, &dave]).await;
    let mut bob_ws = cable_at(&a, &bob).await;
    bob_ws.subscribe("user", None, None).await;
    assert_eq!(next(&mut bob_ws).await["type"], "presence_roster");

    // Alice's 100 tabs on this server all close at once: one offline.
    let mut tabs = Vec::new();
    for _ in 0..100 {
        tabs.push(cable_at(&a, &alice).await);
    }
    assert_eq!(next(&mut bob_ws).await["status"], "online");
    connections(&s, &alice, 100).await;
    drop(tabs);
    let offline = next(&mut bob_ws).await;
    assert_eq!(
        (offline["status"].as_str(), offline["user_id"].as_str()),
        (Some("offline"), Some(alice.id.as_str()))
    );
    connections(&s, &alice, 0).await;

    // Alice and Dave, on the other server only, which stops: both offline, once each.
    let mut held = Vec::new();
    for user in [&alice, &dave] {
        for _ in 0..3 {
            held.push(cable_at(&b, user).await);
        }
        assert_eq!(next(&mut bob_ws).await["status"], "online");
    }
    other.stop().await;
    let mut offline: Vec<String> = Vec::new();
    for _ in 0..2 {
        let f = next(&mut bob_ws).await;
        assert_eq!(f["status"], "offline", "{f}");
        offline.push(f["user_id"].as_str().unwrap().to_owned());
    }
    offline.sort();
    let mut expected = vec![alice.id.clone(), dave.id.clone()];
    expected.sort();
    assert_eq!(offline, expected);
    assert!(before_pong(&mut bob_ws).await.is_empty(), "once each");
    connections(&s, &alice, 0).await;
    connections(&s, &dave, 0).await;
    drop(held);
    s.stop().await;
}

/// Waits until `user` has `n` live connections in the cluster's presence.
async fn connections(s: &TestServer, user: &User, n: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (count,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM presence_connections WHERE user_id = $1::uuid")
                .bind(&user.id)
                .fetch_one(s.t.app.store.pool())
                .await
                .unwrap();
        if count == n {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{count} connections, waiting for {n}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
