//! The Action Cable dialect, spoken to the real `@rails/actioncable` consumer (Node.js, with `ws`
//! as its WebSocket) and, for what that client cannot send, to a raw WebSocket offering its
//! subprotocol.

use futures::SinkExt;
use parley_tests::actioncable::CableClient;
use parley_tests::server::{Cable, TestServer, User};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn cable_url(s: &TestServer, user: &User) -> String {
    format!("{}/api/v1/cable?token={}", s.base.replace("http://", "ws://"), user.token)
}

/// A consumer subscribed to `params` as `name`, once the server confirmed it.
async fn subscribed(client: &mut CableClient, name: &str, params: Value) {
    client.subscribe(name, params).await;
    let answer = client.until(|o| o["name"] == name && o["event"] != "received").await;
    assert_eq!(answer["event"], "connected", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rails_consumer_follows_a_conversation_like_a_parley_client() {
    let s = TestServer::start().await;
    let alice = s.register("alice@example.com").await;
    let bob = s.invite_member(&alice, "bob@example.com").await;
    let conversation = s.group(&alice, &[&bob]).await;

    let mut rails = CableClient::start(&cable_url(&s, &bob)).await;
    // A consumer connects with its first subscription.
    rails.subscribe("chat", json!({"channel": "ConversationChannel", "conversation_id": conversation})).await;
    let opened = rails.until(|o| o["event"] == "opened").await;
    assert_eq!(opened["protocol"], "actioncable-v1-json", "the handshake selects Action Cable's subprotocol");
    assert_eq!(rails.until(|o| o["name"] == "chat").await["event"], "connected");
    subscribed(&mut rails, "me", json!({"channel": "UserChannel"})).await;
    let mut parley = s.cable(Some(&bob.token)).await;
    assert_eq!(parley.frame().await["type"], "welcome");
    assert_eq!(parley.subscribe("conversation", Some(&conversation), None).await["type"], "subscribed");

    // A post, an edit, a reaction added and taken back, a delete.
    let messages = format!("/api/v1/conversations/{conversation}/messages");
    let posted = s.post(&messages, &alice.token, json!({"body": "hello @Member"})).await;
    assert_eq!(posted.status, 201, "{:?}", posted.body);
    let message = posted.data()["id"].as_str().unwrap().to_owned();
    let new_message = rails.received("chat", "new_message").await;
    assert_eq!(&new_message["message"], posted.data(), "the message as the HTTP answer shows it");
    assert_eq!(new_message["position"], posted.position());
    // Bob was mentioned: his UserChannel hears of it.
    let notified = rails.received("me", "notification").await;
    assert_eq!(
        (notified["notification"]["kind"].as_str(), notified["notification"]["message_id"].as_str()),
        (Some("mention"), Some(message.as_str()))
    );
    let edit_path = format!("{messages}/{message}");
    let edited =
        s.call(Method::PATCH, &edit_path, Some(&alice.token), Some(json!({"body": "hello all"})), &[]).await;
    assert_eq!(edited.status, 200, "{:?}", edited.body);
    let message_edited = rails.received("chat", "message_edited").await;
    assert_eq!(&message_edited["message"], edited.data(), "the edited message as the HTTP answer shows it");
    let reaction =
        s.post("/api/v1/reactions", &alice.token, json!({"message_id": message, "emoji": "👍"})).await;
    assert_eq!(reaction.status, 201, "{:?}", reaction.body);
    let reaction_id = reaction.data()["id"].as_str().unwrap().to_owned();
    let added = rails.received("chat", "reaction_added").await;
    assert_eq!(
        (
            added["reaction"]["id"].as_str(),
            added["reaction"]["emoji"].as_str(),
            added["reaction"]["user_id"].as_str()
        ),
        (Some(reaction_id.as_str()), Some("👍"), Some(alice.id.as_str()))
    );
    let removed = s
        .call(Method::DELETE, &format!("/api/v1/reactions/{reaction_id}"), Some(&alice.token), None, &[])
        .await;
    assert!(removed.status.is_success(), "{:?}", removed.body);
    let reaction_removed = rails.received("chat", "reaction_removed").await;
    assert_eq!(
        (reaction_removed["reaction_id"].as_str(), reaction_removed["message_id"].as_str()),
        (Some(reaction_id.as_str()), Some(message.as_str()))
    );
    let deleted = s.call(Method::DELETE, &edit_path, Some(&alice.token), None, &[]).await;
    assert!(deleted.status.is_success(), "{:?}", deleted.body);
    let message_deleted = rails.received("chat", "message_deleted").await;
    assert_eq!(message_deleted["message_id"], message.as_str());

    // The Parley client saw the same events in the same order.
    let rails_positions: Vec<Value> =
        [&new_message, &message_edited, &added, &reaction_removed, &message_deleted]
            .iter()
            .map(|m| m["position"].clone())
            .collect();
    let frames = parley.events(5).await;
    let parley_positions: Vec<Value> = frames.iter().map(|f| f["position"].clone()).collect();
    assert_eq!(rails_positions, parley_positions);
    let types: Vec<&str> = frames.iter().map(|f| f["event"]["event_type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["MessagePosted", "MessageEdited", "ReactionAdded", "ReactionRemoved", "MessageDeleted"]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rails_consumer_resumes_from_a_position_and_is_rejected_when_removed() {
    let s = TestServer::start().await;
    let alice = s.register("alice@example.com").await;
    let bob = s.invite_member(&alice, "bob@example.com").await;
    let conversation = s.group(&alice, &[&bob]).await;
    let messages = format!("/api/v1/conversations/{conversation}/messages");
    let first = s.post(&messages, &alice.token, json!({"body": "before you came"})).await;
    assert_eq!(first.status, 201, "{:?}", first.body);

    // `after` in the identifier: the history after it first, then live messages.
    let mut rails = CableClient::start(&cable_url(&s, &bob)).await;
    let params = json!({"channel": "ConversationChannel", "conversation_id": conversation, "after": "0"});
    rails.subscribe("chat", params).await;
    let earlier = rails.received("chat", "new_message").await;
    assert_eq!(&earlier["message"], first.data());
    let second = s.post(&messages, &alice.token, json!({"body": "now"})).await;
    let live = rails.received("chat", "new_message").await;
    assert_eq!(
        (live["message"]["body"].as_str(), live["position"].as_str()),
        (Some("now"), Some(second.position().as_str()))
    );

    // Removed from the conversation: the subscription ends as a rejection, and nothing follows.
    let removed = s
        .call(
            Method::DELETE,
            &format!("/api/v1/conversations/{conversation}/memberships/{}", bob.id),
            Some(&alice.token),
            None,
            &[],
        )
        .await;
    assert!(removed.status.is_success(), "{:?}", removed.body);
    let ended = rails.until(|o| o["name"] == "chat" && o["event"] != "received").await;
    assert_eq!(ended["event"], "rejected", "{ended}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rails_consumers_in_a_call_exchange_signals() {
    let s = TestServer::start().await;
    let alice = s.register("alice@example.com").await;
    let bob = s.invite_member(&alice, "bob@example.com").await;
    let conversation = s.group(&alice, &[&bob]).await;
    let mut caller = CableClient::start(&cable_url(&s, &alice)).await;
    let mut callee = CableClient::start(&cable_url(&s, &bob)).await;
    subscribed(&mut caller, "call", json!({"channel": "CallChannel"})).await;
    subscribed(&mut callee, "call", json!({"channel": "CallChannel"})).await;

    let started = s
        .post(&format!("/api/v1/conversations/{conversation}/calls"), &alice.token, json!({"kind": "video"}))
        .await;
    assert_eq!(started.status, 201, "{:?}", started.body);
    let call = started.data()["id"].as_str().unwrap().to_owned();
    let incoming = callee.received("call", "incoming_call").await;
    assert_eq!(
        (
            incoming["call_session_id"].as_str(),
            incoming["call_type"].as_str(),
            incoming["conversation_id"].as_str()
        ),
        (Some(call.as_str()), Some("video"), Some(conversation.as_str()))
    );
    assert_eq!(
        (incoming["caller"]["id"].as_str(), incoming["caller"]["name"].as_str()),
        (Some(alice.id.as_str()), Some("Someone"))
    );

    callee.perform("call", "accept_call", json!({"call_session_id": call})).await;
    let accepted = caller.received("call", "call_accepted").await;
    assert_eq!(accepted["accepted_by"]["id"], bob.id.as_str());
    let sdp = "v=0 ".repeat(3 * 1024);
    caller
        .perform("call", "send_signal", json!({"call_session_id": call, "target_user_id": bob.id, "signal": {"type": "offer", "sdp": sdp}}))
        .await;
    let offer = callee.received("call", "signal").await;
    assert_eq!(
        (
            offer["from_user_id"].as_str(),
            offer["call_session_id"].as_str(),
            offer["signal"]["sdp"].as_str().map(str::len)
        ),
        (Some(alice.id.as_str()), Some(call.as_str()), Some(sdp.len()))
    );
    callee
        .perform("call", "send_signal", json!({"call_session_id": call, "target_user_id": alice.id, "signal": {"type": "answer", "sdp": "ok"}}))
        .await;
    assert_eq!(caller.received("call", "signal").await["signal"]["type"], "answer");
    callee.perform("call", "toggle_mute", json!({"call_session_id": call, "muted": true})).await;
    let muted = caller.received("call", "participant_muted").await;
    assert_eq!((muted["user_id"].as_str(), muted["muted"].as_bool()), (Some(bob.id.as_str()), Some(true)));
    caller.perform("call", "toggle_camera", json!({"call_session_id": call, "camera_off": true})).await;
    assert_eq!(callee.received("call", "participant_camera_toggled").await["camera_off"], true);
    // A second accept is refused on the subscription, and nothing is written.
    let before = s.events().await;
    callee.perform("call", "accept_call", json!({"call_session_id": call})).await;
    let refused = callee.received("call", "error").await;
    assert_eq!(refused["code"], "conflict", "{refused}");
    assert_eq!(s.events().await, before);

    caller.perform("call", "end_call", json!({"call_session_id": call})).await;
    callee.perform("call", "end_call", json!({"call_session_id": call})).await;
    let ended = caller.received("call", "call_ended").await;
    assert_eq!(
        (ended["call_session_id"].as_str(), ended["state"].as_str()),
        (Some(call.as_str()), Some("ended"))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_presence_channel_sees_others_come_and_go_and_a_revoked_consumer_stays_away() {
    let s = TestServer::start().await;
    let alice = s.register("alice@example.com").await;
    let bob = s.invite_member(&alice, "bob@example.com").await;
    s.group(&alice, &[&bob]).await;
    let mut rails = CableClient::start(&cable_url(&s, &bob)).await;
    rails.subscribe("presence", json!({"channel": "PresenceChannel"})).await;
    let initial = rails.received("presence", "initial_presence").await;
    assert_eq!(initial["online_user_ids"], json!([]));
    rails.perform("presence", "ping", json!({})).await;

    let alice_ws = s.cable(Some(&alice.token)).await;
    let online = rails.until(|o| o["event"] == "received" && o["data"]["status"] == "online").await;
    assert_eq!(
        (online["data"]["user_id"].as_str(), online["data"]["username"].as_str()),
        (Some(alice.id.as_str()), Some("Someone"))
    );
    drop(alice_ws);
    let offline = rails.until(|o| o["event"] == "received" && o["data"]["status"] == "offline").await;
    assert_eq!(offline["data"]["user_id"], alice.id.as_str());

    // Bob logs out: the consumer is told not to come back, and its monitor stops.
    let logout = s.call(Method::DELETE, "/api/v1/auth/logout", Some(&bob.token), None, &[]).await;
    assert!(logout.status.is_success(), "{:?}", logout.body);
    let closed = rails.until(|o| o["event"] == "closed").await;
    assert_eq!(
        (closed["monitor_running"].as_bool(), closed["reconnect_allowed"].as_bool()),
        (Some(false), Some(false)),
        "{closed}"
    );
    s.stop().await;
}

/// A raw WebSocket offering Action Cable's subprotocol.
async fn raw_cable(s: &TestServer, user: &User) -> Cable {
    let mut request = cable_url(s, user).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "actioncable-v1-json, actioncable-unsupported".parse().unwrap());
    let (ws, response) = tokio_tungstenite::connect_async(request).await.expect("websocket connects");
    assert_eq!(
        response.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap()),
        Some("actioncable-v1-json")
    );
    let mut cable = Cable { ws };
    assert_eq!(cable.frame().await["type"], "welcome");
    cable
}

/// The next frame that is not Action Cable's ping.
async fn answer(cable: &mut Cable) -> Value {
    loop {
        let f = cable.frame().await;
        if f["type"] != "ping" {
            return f;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_action_cable_frames_get_clear_answers_and_the_connection_stays_up() {
    let s = TestServer::start().await;
    let alice = s.register("alice@example.com").await;
    let bob = s.invite_member(&alice, "bob@example.com").await;
    let carol = s.invite_member(&alice, "carol@example.com").await;
    let conversation = s.group(&alice, &[&bob]).await;
    let mut ws = raw_cable(&s, &carol).await;
    let before = s.events().await;
    let send = |text: String| Message::Text(text.into());

    // Unknown channels and conversations one is not a member of are rejected.
    let nope = r#"{"channel":"NopeChannel"}"#;
    ws.ws.send(send(json!({"command": "subscribe", "identifier": nope}).to_string())).await.unwrap();
    assert_eq!(answer(&mut ws).await, json!({"identifier": nope, "type": "reject_subscription"}));
    let theirs = json!({"channel": "ConversationChannel", "conversation_id": conversation}).to_string();
    ws.ws.send(send(json!({"command": "subscribe", "identifier": theirs}).to_string())).await.unwrap();
    assert_eq!(answer(&mut ws).await["type"], "reject_subscription");
    // Not JSON, a malformed identifier, data that is not JSON, an unknown action, an action on a
    // subscription that does not exist.
    ws.ws.send(send("not json".into())).await.unwrap();
    assert_eq!((answer(&mut ws).await["code"].as_str()), Some("bad_request"));
    ws.ws.send(send(json!({"command": "subscribe", "identifier": "{oops"}).to_string())).await.unwrap();
    let malformed = answer(&mut ws).await;
    assert_eq!(
        (malformed["identifier"].as_str(), malformed["message"]["code"].as_str()),
        (Some("{oops"), Some("bad_request"))
    );
    // Identifiers are echoed byte for byte, whatever the key order.
    let calls = r#"{ "channel" : "CallChannel" }"#;
    ws.ws.send(send(json!({"command": "subscribe", "identifier": calls}).to_string())).await.unwrap();
    assert_eq!(answer(&mut ws).await, json!({"identifier": calls, "type": "confirm_subscription"}));
    // Subscribing again with the same identifier is the same subscription, confirmed again.
    ws.ws.send(send(json!({"command": "subscribe", "identifier": calls}).to_string())).await.unwrap();
    assert_eq!(answer(&mut ws).await["type"], "confirm_subscription");
    for (data, wanted) in [
        ("{oops", "not JSON"),
        (r#"{"action":"fly"}"#, "no action"),
        (r#"{"action":"send_signal","call_session_id":"c"}"#, "target_user_id"),
    ] {
        ws.ws
            .send(send(json!({"command": "message", "identifier": calls, "data": data}).to_string()))
            .await
            .unwrap();
        let refused = answer(&mut ws).await;
        assert_eq!(refused["identifier"], calls);
        assert_eq!(refused["message"]["code"], "bad_request", "{refused}");
        assert!(refused["message"]["message"].as_str().unwrap().contains(wanted), "{refused}");
    }
    let absent = r#"{"channel":"PresenceChannel"}"#;
    let ping = json!({"command": "message", "identifier": absent, "data": r#"{"action":"ping"}"#});
    ws.ws.send(send(ping.to_string())).await.unwrap();
    let unknown = answer(&mut ws).await;
    assert_eq!(
        (unknown["identifier"].as_str(), unknown["message"]["code"].as_str()),
        (Some(absent), Some("not_found"))
    );
    // Answering a call that does not exist.
    let accept = json!({"command": "message", "identifier": calls, "data": json!({"action": "accept_call", "call_session_id": bob.id}).to_string()});
    ws.ws.send(send(accept.to_string())).await.unwrap();
    assert_eq!(answer(&mut ws).await["message"]["code"], "not_found");
    assert_eq!(s.events().await, before, "nothing appended");

    // Still up: pings keep coming, every 3 s.
    let started = std::time::Instant::now();
    let ping = loop {
        let f = ws.frame().await;
        if f["type"] == "ping" {
            break f;
        }
    };
    assert!(ping["message"].is_i64() && started.elapsed() < std::time::Duration::from_secs(4), "{ping}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_gets_an_action_cable_disconnect_without_reconnect() {
    let s = TestServer::start().await;
    let nobody =
        User { token: "nope".into(), id: String::new(), account_id: String::new(), position: String::new() };
    let mut request = cable_url(&s, &nobody).into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "actioncable-v1-json".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(request).await.expect("websocket connects");
    let mut cable = Cable { ws };
    assert_eq!(
        cable.frame().await,
        json!({"type": "disconnect", "reason": "unauthorized", "reconnect": false})
    );
    assert_eq!(cable.next().await, Err(Some(4401)));
    s.stop().await;
}
