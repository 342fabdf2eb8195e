//! End to end over HTTP and WebSocket: the real server on a random port.

use parley_tests::server::TestServer;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn register_invite_group_post_and_the_member_sees_it_live_in_reads_and_in_the_audit_log() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let me = s.get_at("/api/v1/users/me", &owner.token, &owner.position).await;
    assert_eq!(me.status, 200, "{:?}", me.body);
    assert_eq!(me.data()["email"], json!("owner@example.com"));
    assert_eq!(me.data()["roles"], json!(["owner"]));
    assert!(me.data()["permissions"].as_array().unwrap().contains(&json!("audit.view")));
    assert_eq!(me.header("etag"), Some("\"1\""));

    let bob = s.invite_member(&owner, "bob@example.com").await;
    assert_eq!(bob.account_id, owner.account_id, "the invitation joins the inviting account");
    let conversation = s.group(&owner, &[]).await;
    let added = s
        .post(
            &format!("/api/v1/conversations/{conversation}/memberships"),
            &owner.token,
            json!({"user_id": bob.id}),
        )
        .await;
    assert_eq!(added.status, 201, "{:?}", added.body);
    assert!(added.header("x-position").is_some());

    let mut cable = s.cable(Some(&bob.token)).await;
    assert_eq!(cable.frame().await["type"], json!("welcome"));
    let sub = s.get_at(&format!("/api/v1/conversations/{conversation}"), &bob.token, &added.position()).await;
    assert_eq!(sub.status, 200, "{:?}", sub.body);
    assert_eq!(sub.data()["members"].as_array().unwrap().len(), 2);
    let subscribed = cable.subscribe("conversation", Some(&conversation), None).await;
    assert_eq!(subscribed["type"], json!("subscribed"), "{subscribed}");

    let posted = s
        .post(
            &format!("/api/v1/conversations/{conversation}/messages"),
            &owner.token,
            json!({"body": "hello bob"}),
        )
        .await;
    assert_eq!(posted.status, 201, "{:?}", posted.body);
    let message = posted.data().clone();
    assert_eq!(
        (message["body"].clone(), message["version"].clone(), message["deleted"].clone()),
        (json!("hello bob"), json!(1), json!(false))
    );
    assert_eq!(posted.header("x-position"), Some(posted.position().as_str()));

    let live = cable.events(1).await;
    assert_eq!(live[0]["event"]["event_type"], json!("MessagePosted"));
    assert_eq!(live[0]["event"]["data"]["body"], json!("hello bob"));
    assert_eq!(live[0]["event"]["data"]["message_id"], message["id"]);
    assert_eq!(live[0]["position"], json!(posted.position()));

    let page = s
        .get_at(&format!("/api/v1/conversations/{conversation}/messages"), &bob.token, &posted.position())
        .await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    assert_eq!(page.data()[0]["id"], message["id"]);
    assert_eq!(page.data()[0]["body"], json!("hello bob"));

    let audit =
        s.get_at("/api/v1/audit/events?event_type=MessagePosted", &owner.token, &posted.position()).await;
    assert_eq!(audit.status, 200, "{:?}", audit.body);
    let events = audit.data().as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["message_id"], message["id"]);
    assert_eq!(events[0]["metadata"]["actor_id"], json!(owner.id));
    let registered = s.get("/api/v1/audit/events?event_type=UserRegistered", &owner.token).await;
    assert!(registered
        .data()
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["data"]["password_hash"] == json!("[redacted]")));
    let forbidden = s.get("/api/v1/audit/events", &bob.token).await;
    forbidden.assert_error(403, "forbidden");
    s.stop().await;
}

#[tokio::test]
async fn the_same_post_twice_with_an_idempotency_key_appends_once_and_replays_the_answer() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let conversation = s.group(&owner, &[]).await;
    let path = format!("/api/v1/conversations/{conversation}/messages");
    let key = [("idempotency-key", "post-1")];
    let first = s.call(Method::POST, &path, Some(&owner.token), Some(json!({"body": "once"})), &key).await;
    assert_eq!(first.status, 201);
    let count = s.events().await;
    let second = s.call(Method::POST, &path, Some(&owner.token), Some(json!({"body": "once"})), &key).await;
    assert_eq!(second.status, 201);
    assert_eq!(second.body, first.body, "the same body");
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(second.header("x-position"), first.header("x-position"));
    assert_eq!(s.events().await, count, "nothing appended");
    let other = s.call(Method::POST, &path, Some(&owner.token), Some(json!({"body": "twice"})), &key).await;
    other.assert_error(422, "idempotency_key_reused");
    let secret = s
        .call(
            Method::POST,
            "/api/v1/invitations",
            Some(&owner.token),
            Some(json!({"email": "x@example.com", "role": "member"})),
            &key,
        )
        .await;
    secret.assert_error(400, "idempotency_not_supported");
    assert_eq!(s.events().await, count);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebuilding_every_projection_while_the_server_runs_changes_no_answer() {
    use clap::Parser;
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let bob = s.invite_member(&owner, "bob@example.com").await;
    let conversation = s.group(&owner, &[&bob]).await;
    let mut last = String::new();
    for i in 0..30 {
        last = s
            .post(
                &format!("/api/v1/conversations/{conversation}/messages"),
                &bob.token,
                json!({"body": format!("m{i}")}),
            )
            .await
            .position();
    }
    // Every kind of chat change, so the rebuilt read models must reproduce each.
    let path = format!("/api/v1/conversations/{conversation}/messages");
    let page = s.get_at(&format!("{path}?limit=5"), &owner.token, &last).await;
    let ids: Vec<String> =
        page.data().as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    for (i, id) in ids.iter().enumerate() {
        let emoji = ["👍", "🎉"][i % 2];
        let reacted =
            s.post("/api/v1/reactions", &owner.token, json!({"message_id": id, "emoji": emoji})).await;
        assert_eq!(reacted.status, 201, "{:?}", reacted.body);
    }
    let edit = s
        .call(
            Method::PATCH,
            &format!("{path}/{}", ids[0]),
            Some(&bob.token),
            Some(json!({"body": "edited"})),
            &[],
        )
        .await;
    assert_eq!(edit.status, 200, "{:?}", edit.body);
    let gone = s.call(Method::DELETE, &format!("{path}/{}", ids[1]), Some(&owner.token), None, &[]).await;
    assert_eq!(gone.status, 204);
    let read = s
        .post(
            &format!("/api/v1/conversations/{conversation}/read"),
            &owner.token,
            json!({"message_id": ids[4]}),
        )
        .await;
    assert_eq!(read.status, 200, "{:?}", read.body);
    let direct = s
        .post("/api/v1/conversations", &owner.token, json!({"kind": "direct", "member_ids": [bob.id]}))
        .await;
    let psst = s
        .post(
            &format!("/api/v1/conversations/{}/messages", direct.data()["id"].as_str().unwrap()),
            &bob.token,
            json!({"body": "psst"}),
        )
        .await;
    assert_eq!(psst.status, 201, "{:?}", psst.body);
    let mention = s
        .post(
            &format!("/api/v1/conversations/{conversation}/messages"),
            &owner.token,
            json!({"body": "@Member see"}),
        )
        .await;
    assert_eq!(mention.data()["mentions"], json!([bob.id]));
    let reads = [
        "/api/v1/conversations".to_owned(),
        "/api/v1/users/me".to_owned(),
        format!("/api/v1/conversations/{conversation}"),
        format!("/api/v1/conversations/{conversation}/messages?limit=100"),
        format!("/api/v1/conversations/{conversation}/messages?limit=7&before=20"),
        format!("/api/v1/conversations/{conversation}/messages?after=10&limit=5"),
        "/api/v1/audit/events?limit=1000".to_owned(),
    ];
    let last = mention.position();
    let mut before: Vec<Value> = Vec::new();
    for r in &reads {
        before.push(s.get_at(r, &owner.token, &last).await.body);
    }
    let bobs_list = s.get_at("/api/v1/conversations", &bob.token, &last).await.body;
    let bobs_notifications = s.get_at("/api/v1/notifications", &bob.token, &last).await.body;
    // Added to the group and to the direct conversation, and mentioned.
    assert_eq!(bobs_notifications["data"].as_array().unwrap().len(), 3, "{bobs_notifications}");
    // Read up to the fifth newest: four newer, one of them deleted.
    let group_entry = before[0]["data"].as_array().unwrap().iter().find(|c| c["kind"] == "group").unwrap();
    assert_eq!(group_entry["unread_count"], 3, "{}", before[0]);
    let cli = parley_api::cli::Cli::try_parse_from([
        "parley",
        "--database-url",
        &s.t.db.url(),
        "projections",
        "rebuild",
        "--all",
        "--yes",
    ])
    .unwrap();
    assert_eq!(parley_api::cli::run(cli).await.unwrap(), std::process::ExitCode::SUCCESS);
    for (r, old) in reads.iter().zip(&before) {
        let now = s.get_at(r, &owner.token, &last).await;
        assert_eq!(&now.body, old, "{r} answers the same after the rebuild");
    }
    assert_eq!(s.get_at("/api/v1/conversations", &bob.token, &last).await.body, bobs_list);
    assert_eq!(s.get_at("/api/v1/notifications", &bob.token, &last).await.body, bobs_notifications);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_accounts_conversation_messages_and_events_are_invisible_over_http_and_websocket() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let stranger = s.register("stranger@example.com").await;
    let conversation = s.group(&owner, &[]).await;
    let posted = s
        .post(
            &format!("/api/v1/conversations/{conversation}/messages"),
            &owner.token,
            json!({"body": "secret"}),
        )
        .await;
    let count = s.events().await;

    s.get_at(&format!("/api/v1/conversations/{conversation}"), &stranger.token, &posted.position())
        .await
        .assert_error(404, "not_found");
    s.get_at(&format!("/api/v1/conversations/{conversation}/messages"), &stranger.token, &posted.position())
        .await
        .assert_error(404, "not_found");
    s.post(&format!("/api/v1/conversations/{conversation}/messages"), &stranger.token, json!({"body": "hi"}))
        .await
        .assert_error(404, "not_found");
    s.post(
        &format!("/api/v1/conversations/{conversation}/memberships"),
        &stranger.token,
        json!({"user_id": stranger.id}),
    )
    .await
    .assert_error(404, "not_found");
    s.post(
        &format!("/api/v1/conversations/{conversation}/memberships"),
        &owner.token,
        json!({"user_id": stranger.id}),
    )
    .await
    .assert_error(404, "not_found");
    let audit = s.get_at("/api/v1/audit/events?limit=1000", &stranger.token, &posted.position()).await;
    assert!(audit.data().as_array().unwrap().iter().all(|e| e["data"].to_string().find("secret").is_none()));
    assert!(audit.data().as_array().unwrap().iter().all(|e| e["stream_id"] != json!(conversation)));
    assert_eq!(s.events().await, count, "nothing written");

    let mut cable = s.cable(Some(&stranger.token)).await;
    cable.frame().await;
    let rejected = cable.subscribe("conversation", Some(&conversation), Some("0")).await;
    assert_eq!((rejected["type"].clone(), rejected["code"].clone()), (json!("rejected"), json!("not_found")));
    assert_eq!(cable.subscribe("account", None, Some("0")).await["type"], json!("subscribed"));
    s.post(
        &format!("/api/v1/conversations/{conversation}/messages"),
        &owner.token,
        json!({"body": "still secret"}),
    )
    .await;
    let own = s.group(&stranger, &[]).await;
    // The stranger's account feed shows its own events only: history, then its new group.
    let mut seen = Vec::new();
    while !seen.iter().any(|f: &Value| f["event"]["stream_id"] == json!(own)) {
        seen.push(cable.events(1).await.remove(0));
    }
    assert!(seen.iter().all(|f| f["event"]["stream_id"] != json!(conversation)));
    assert!(seen.iter().all(|f| f["event"]["data"].to_string().find("secret").is_none()));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_configured_secret_every_server_on_the_database_accepts_the_same_tokens() {
    use parley_api::http::Server;
    let s = TestServer::start().await;
    let mut config = s.t.config.clone();
    config.bind = "127.0.0.1:0".into();
    config.workers = false;
    assert!(config.jwt_secret.is_none());
    let a = Server::start(s.t.app.clone(), &config).await.unwrap();
    let b = Server::start(s.t.app.clone(), &config).await.unwrap();
    let http = reqwest::Client::new();
    let registered: Value = http
        .post(format!("http://{}/api/v1/auth/register", a.addr))
        .json(&json!({"name": "N", "email": "n@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["data"]["access_token"].as_str().unwrap();
    let position = registered["meta"]["position"].as_str().unwrap();
    let me = http
        .get(format!("http://{}/api/v1/users/me", b.addr))
        .bearer_auth(token)
        .header("x-min-position", position)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200, "a token from one server works on the other");
    a.stop().await;
    b.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn an_aggregate_is_shown_as_it_was_and_other_accounts_streams_are_not_found() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let stranger = s.register("stranger@example.com").await;
    let conversation = s.group(&owner, &[]).await;
    let posted = s
        .post(&format!("/api/v1/conversations/{conversation}/messages"), &owner.token, json!({"body": "hi"}))
        .await;
    let path = format!("/api/v1/audit/streams/Conversation/{conversation}");
    let first = s.get_at(&format!("{path}?version=1"), &owner.token, &posted.position()).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.data()["version"], json!(1));
    assert_eq!(first.data()["state"]["members"], json!({}));
    assert_eq!(first.data()["events"].as_array().unwrap().len(), 1);
    let now = s.get_at(&path, &owner.token, &posted.position()).await;
    assert_eq!(
        (now.data()["version"].clone(), now.data()["state"]["messages_posted"].clone()),
        (json!(3), json!(1))
    );
    let user = s.get(&format!("/api/v1/audit/streams/User/{}", owner.id), &owner.token).await;
    assert_eq!(user.data()["state"]["password_hash"], json!("[redacted]"));
    s.get_at(&path, &stranger.token, &posted.position()).await.assert_error(404, "not_found");
    s.get(&format!("/api/v1/audit/streams/Nothing/{conversation}"), &owner.token)
        .await
        .assert_error(404, "not_found");
    s.get(&format!("{path}?version=0"), &owner.token).await.assert_error(400, "bad_request");
    s.get(&format!("{path}?as_of=yesterday"), &owner.token).await.assert_error(400, "bad_request");
    let permissions = s.get("/api/v1/permissions", &owner.token).await;
    assert_eq!(permissions.data().as_array().unwrap().len(), 17);
    assert_eq!(
        permissions.data()[0],
        json!({"name": "account.manage", "description": "Manage the account itself"})
    );
    s.stop().await;
}
