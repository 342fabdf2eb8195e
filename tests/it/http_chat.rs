//! Chat over HTTP and the cable: direct conversations, message edits and deletes, reactions,
//! read state, leaving and removal.

use futures::future::join_all;
use parley_tests::server::{Answer, TestServer, User};
use reqwest::Method;
use serde_json::{json, Value};

pub(crate) fn messages_path(conversation: &str) -> String {
    format!("/api/v1/conversations/{conversation}/messages")
}

async fn post_message(s: &TestServer, user: &User, conversation: &str, body: &str) -> Answer {
    let a = s.post(&messages_path(conversation), &user.token, json!({"body": body})).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    a
}

async fn call(s: &TestServer, method: Method, path: &str, user: &User, body: Option<Value>) -> Answer {
    s.call(method, path, Some(&user.token), body, &[]).await
}

fn id(a: &Answer) -> String {
    a.data()["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_requests_for_one_direct_conversation_yield_one() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let member = s.invite_member(&owner, "member@example.com").await;
    let asks = (0..20).map(|i| {
        let (me, other) = if i % 2 == 0 { (&owner, &member) } else { (&member, &owner) };
        s.post("/api/v1/conversations", &me.token, json!({"kind": "direct", "member_ids": [other.id]}))
    });
    let answers = join_all(asks).await;
    let created = answers.iter().filter(|a| a.status == 201).count();
    assert_eq!(created, 1, "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    let odd: Vec<&Answer> = answers.iter().filter(|a| a.status != 201 && a.status != 200).collect();
    assert!(odd.is_empty(), "{:?}", odd.iter().map(|a| (a.status, a.body.clone())).collect::<Vec<_>>());
    let ids: std::collections::BTreeSet<String> = answers.iter().map(id).collect();
    assert_eq!(ids.len(), 1, "every answer names the same conversation: {ids:?}");
    let direct = ids.into_iter().next().unwrap();
    let shown = answers.iter().find(|a| a.status == 200).unwrap();
    assert_eq!(shown.data()["kind"], "direct");
    assert_eq!(shown.data()["members"].as_array().unwrap().len(), 2);
    let (started,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM events WHERE event_type = 'ConversationStarted'")
            .fetch_one(s.t.app.store.pool())
            .await
            .unwrap();
    assert_eq!(started, 1, "one conversation in the log");

    // Both can talk in it; nobody joins, leaves or renames it; bad asks write nothing.
    post_message(&s, &member, &direct, "hi").await;
    let before = s.events().await;
    let bad = [
        (json!({"kind": "direct", "member_ids": [owner.id]}), 422),
        (json!({"kind": "direct", "member_ids": []}), 422),
        (json!({"kind": "direct", "member_ids": [member.id, owner.id]}), 422),
        (json!({"kind": "direct", "member_ids": [uuid::Uuid::now_v7()]}), 422),
        (json!({"kind": "channel", "member_ids": []}), 422),
    ];
    for (body, status) in bad {
        let a = s.post("/api/v1/conversations", &owner.token, body.clone()).await;
        assert_eq!(a.status.as_u16(), status, "{body}: {:?}", a.body);
    }
    let path = format!("/api/v1/conversations/{direct}");
    let rename = call(&s, Method::PATCH, &path, &owner, Some(json!({"title": "x"}))).await;
    rename.assert_error(422, "validation_failed");
    let leave = call(&s, Method::DELETE, &format!("{path}/memberships/{}", member.id), &member, None).await;
    leave.assert_error(422, "validation_failed");
    assert_eq!(s.events().await, before, "nothing written");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_edited_by_their_author_deleted_by_those_allowed_and_carry_their_reactions() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let ann = s.invite_member(&owner, "ann@example.com").await;
    let ben = s.invite_member(&owner, "ben@example.com").await;
    let group = s.group(&owner, &[&ann, &ben]).await;
    let posted = post_message(&s, &ann, &group, "first draft").await;
    let message = id(&posted);
    assert_eq!(posted.data()["version"], 1);
    let message_path = format!("{}/{message}", messages_path(&group));

    // Edits: the author only, at the version they saw.
    let before = s.events().await;
    let edit = |user: &User, etag: &str, body: &str| {
        let (token, etag, body) = (user.token.clone(), etag.to_owned(), body.to_owned());
        let s = &s;
        let path = message_path.clone();
        async move {
            s.call(Method::PATCH, &path, Some(&token), Some(json!({"body": body})), &[("if-match", &etag)])
                .await
        }
    };
    edit(&ben, "\"1\"", "mine").await.assert_error(403, "forbidden");
    edit(&ann, "\"1\"", "").await.assert_error(422, "validation_failed");
    edit(&ann, "\"1\"", &"x".repeat(10_001)).await.assert_error(422, "validation_failed");
    assert_eq!(s.events().await, before, "nothing written");
    let edited = edit(&ann, "\"1\"", "final").await;
    assert_eq!(edited.status, 200, "{:?}", edited.body);
    assert_eq!(edited.header("etag"), Some("\"2\""));
    let stale = edit(&ann, "\"1\"", "again").await;
    stale.assert_error(412, "precondition_failed");
    assert_eq!(stale.body["details"]["version"], 2);

    // Reactions: once per user and emoji, listed on the message, taken back by their author.
    let react = |user: &User, emoji: &str| {
        let (token, body) = (user.token.clone(), json!({"message_id": message, "emoji": emoji}));
        let s = &s;
        async move { s.post("/api/v1/reactions", &token, body).await }
    };
    let thumbs = react(&ben, "👍").await;
    assert_eq!(thumbs.status, 201, "{:?}", thumbs.body);
    let again = react(&ben, "👍").await;
    assert_eq!((again.status.as_u16(), id(&again)), (200, id(&thumbs)), "the same reaction");
    assert_eq!(react(&owner, "👍").await.status, 201);
    assert_eq!(react(&ann, "❤️").await.status, 201);
    for bad in ["ab", "👍👍", "", ":+1:"] {
        react(&ann, bad).await.assert_error(422, "validation_failed");
    }
    let page = s.get_at(&messages_path(&group), &ann.token, &react(&ann, "❤️").await.position()).await;
    let shown = &page.data()[0];
    assert_eq!(shown["body"], "final");
    assert_eq!(shown["version"], 2);
    assert!(shown["edited_at"].is_string());
    assert_eq!(
        shown["reactions"],
        json!([{"emoji": "👍", "count": 2, "user_ids": [ben.id, owner.id]}, {"emoji": "❤️", "count": 1, "user_ids": [ann.id]}])
    );
    let reaction_path = format!("/api/v1/reactions/{}", id(&thumbs));
    call(&s, Method::DELETE, &reaction_path, &ann, None).await.assert_error(403, "forbidden");
    let removed = call(&s, Method::DELETE, &reaction_path, &ben, None).await;
    assert_eq!(removed.status, 204);
    call(&s, Method::DELETE, &reaction_path, &ben, None).await.assert_error(404, "not_found");
    let page = s.get_at(&messages_path(&group), &ann.token, removed.header("x-position").unwrap()).await;
    assert_eq!(page.data()[0]["reactions"][0], json!({"emoji": "👍", "count": 1, "user_ids": [owner.id]}));

    // Deletes: not by another member; by the conversation's admin; the message keeps its place.
    call(&s, Method::DELETE, &message_path, &ben, None).await.assert_error(403, "forbidden");
    let deleted = call(&s, Method::DELETE, &message_path, &owner, None).await;
    assert_eq!(deleted.status, 204, "{:?}", deleted.body);
    let page = s.get_at(&messages_path(&group), &ann.token, deleted.header("x-position").unwrap()).await;
    assert_eq!(page.data()[0]["id"], json!(message));
    assert_eq!(
        (page.data()[0]["body"].clone(), page.data()[0]["deleted"].clone()),
        (json!(null), json!(true))
    );
    let before = s.events().await;
    react(&ben, "🎉").await.assert_error(409, "conflict");
    edit(&ann, "*", "resurrect").await.assert_error(409, "conflict");
    assert_eq!(
        call(&s, Method::DELETE, &message_path, &ann, None).await.status,
        204,
        "deleting again changes nothing"
    );
    assert_eq!(s.events().await, before, "nothing written");

    // Leaving, then posting, finds nothing; an archived conversation takes no posts.
    let left = call(
        &s,
        Method::DELETE,
        &format!("/api/v1/conversations/{group}/memberships/{}", ben.id),
        &ben,
        None,
    )
    .await;
    assert_eq!(left.status, 204, "{:?}", left.body);
    s.post(&messages_path(&group), &ben.token, json!({"body": "still here?"}))
        .await
        .assert_error(404, "not_found");
    call(&s, Method::DELETE, &format!("/api/v1/conversations/{group}/memberships/{}", owner.id), &ann, None)
        .await
        .assert_error(403, "forbidden");
    call(&s, Method::DELETE, &format!("/api/v1/conversations/{group}"), &ann, None)
        .await
        .assert_error(403, "forbidden");
    let archived = call(&s, Method::DELETE, &format!("/api/v1/conversations/{group}"), &owner, None).await;
    assert_eq!(archived.status, 204);
    s.post(&messages_path(&group), &ann.token, json!({"body": "anyone?"}))
        .await
        .assert_error(409, "conflict");
    let list = s.get_at("/api/v1/conversations", &ann.token, archived.header("x-position").unwrap()).await;
    assert_eq!(list.data().as_array().unwrap().len(), 0, "gone from lists");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unread_counts_and_last_messages_hold_under_concurrent_posting() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let ann = s.invite_member(&owner, "ann@example.com").await;
    let ben = s.invite_member(&owner, "ben@example.com").await;
    let group = s.group(&owner, &[&ann, &ben]).await;
    let quiet = s.group(&owner, &[]).await;
    post_message(&s, &owner, &quiet, "older activity").await;
    let path = messages_path(&group);
    let posts = (0..40).map(|i| {
        let who = if i % 2 == 0 { &ann } else { &ben };
        s.post(&path, &who.token, json!({"body": format!("m{i}")}))
    });
    let answers = join_all(posts).await;
    assert!(answers.iter().all(|a| a.status == 201));
    let newest =
        answers.iter().max_by_key(|a| a.data()["cursor"].as_str().unwrap().parse::<i64>().unwrap()).unwrap();
    let at = newest.position();

    let conversations = |user: &User, at: String| {
        let s = &s;
        let token = user.token.clone();
        async move { s.get_at("/api/v1/conversations", &token, &at).await }
    };
    let list = conversations(&owner, at.clone()).await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let first = &list.data()[0];
    assert_eq!(first["id"], json!(group), "most recent activity first");
    assert_eq!(first["unread_count"], 40);
    assert_eq!(first["last_message"]["id"], newest.data()["id"]);
    assert_eq!(list.data()[1]["unread_count"], 0, "one's own posts are not unread");
    assert_eq!(conversations(&ann, at.clone()).await.data()[0]["unread_count"], 20, "ben's twenty");

    // Reading up to the tenth message leaves thirty; deleting one of them, twenty-nine.
    let page = s.get_at(&format!("{}?after=0&limit=40", messages_path(&group)), &owner.token, &at).await;
    let in_order: Vec<Value> = page.data().as_array().unwrap().iter().rev().cloned().collect();
    assert_eq!(in_order.len(), 40);
    let tenth = in_order[9]["id"].as_str().unwrap();
    let read = s
        .post(&format!("/api/v1/conversations/{group}/read"), &owner.token, json!({"message_id": tenth}))
        .await;
    assert_eq!(read.status, 200, "{:?}", read.body);
    assert_eq!(conversations(&owner, read.position()).await.data()[0]["unread_count"], 30);
    let unread = &in_order[20];
    let author = if unread["author_id"] == json!(ann.id) { &ann } else { &ben };
    let path = format!("{}/{}", messages_path(&group), unread["id"].as_str().unwrap());
    let deleted = call(&s, Method::DELETE, &path, author, None).await;
    assert_eq!(deleted.status, 204);
    let list = conversations(&owner, deleted.header("x-position").unwrap().to_owned()).await;
    assert_eq!(list.data()[0]["unread_count"], 29);
    let not_theirs = s
        .post(&format!("/api/v1/conversations/{group}/read"), &owner.token, json!({"message_id": quiet}))
        .await;
    not_theirs.assert_error(404, "not_found");
    s.stop().await;
}

/// The next frame that is not the conversations' own start: a subscription made while their
/// starting events were still behind the log's commit horizon receives them first.
async fn past_setup(cable: &mut parley_tests::server::Cable) -> Value {
    loop {
        let frame = cable.frame().await;
        if !matches!(frame["event"]["event_type"].as_str(), Some("ConversationStarted" | "MemberAdded")) {
            return frame;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_member_receives_nothing_posted_after_the_removal() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let ann = s.invite_member(&owner, "ann@example.com").await;
    let group = s.group(&owner, &[&ann]).await;
    let other = s.group(&owner, &[&ann]).await;
    let mut cable = s.cable(Some(&ann.token)).await;
    assert_eq!(cable.frame().await["type"], "welcome");
    assert_eq!(cable.subscribe("conversation", Some(&group), None).await["type"], "subscribed");
    assert_eq!(cable.subscribe("conversation", Some(&other), None).await["type"], "subscribed");
    post_message(&s, &owner, &group, "before").await;
    let seen = past_setup(&mut cable).await;
    assert_eq!(seen["event"]["data"]["body"], "before");

    let removed = call(
        &s,
        Method::DELETE,
        &format!("/api/v1/conversations/{group}/memberships/{}", ann.id),
        &owner,
        None,
    )
    .await;
    assert_eq!(removed.status, 204, "{:?}", removed.body);
    assert_eq!(
        past_setup(&mut cable).await,
        json!({"type": "unsubscribed", "channel": "conversation", "id": group, "reason": "removed"})
    );
    post_message(&s, &owner, &group, "after").await;
    // The feed is one ordered stream: a later event of the other conversation arriving first
    // means nothing of the first came in between.
    post_message(&s, &owner, &other, "marker").await;
    let next = cable.frame().await;
    assert_eq!((next["id"].clone(), next["event"]["data"]["body"].clone()), (json!(other), json!("marker")));
    // Nor can they subscribe again, or read it.
    assert_eq!(cable.subscribe("conversation", Some(&group), Some("0")).await["type"], "rejected");
    s.get(&messages_path(&group), &ann.token).await.assert_error(404, "not_found");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mentions_and_additions_notify_live_on_the_user_channel_and_are_marked_read() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let ann = s.invite_member(&owner, "ann@example.com").await;
    let named = call(
        &s,
        Method::PATCH,
        &format!("/api/v1/users/{}", ann.id),
        &ann,
        Some(json!({"display_name": "ann"})),
    )
    .await;
    assert_eq!(named.status, 200, "{:?}", named.body);
    // Mentions are resolved from the users read model: let it take in the new name.
    assert_eq!(
        s.get_at(&format!("/api/v1/users/{}", ann.id), &owner.token, &named.position()).await.status,
        200
    );
    let mut cable = s.cable(Some(&ann.token)).await;
    assert_eq!(cable.frame().await["type"], "welcome");
    let subscribed = cable.subscribe("user", None, None).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    assert_eq!(cable.frame().await["type"], "presence_roster");

    let group = s.group(&owner, &[&ann]).await;
    let added = cable.frame().await;
    assert_eq!(
        (added["channel"].clone(), added["event"]["event_type"].clone()),
        (json!("user"), json!("MemberAdded"))
    );
    post_message(&s, &owner, &group, "no one in particular, @nobody").await;
    let mention = post_message(&s, &owner, &group, "look here @Ann!").await;
    assert_eq!(mention.data()["mentions"], json!([ann.id]));
    let frame = cable.frame().await;
    assert_eq!(frame["event"]["event_type"], "MessagePosted");
    assert_eq!(
        frame["event"]["data"]["message_id"],
        mention.data()["id"],
        "the mention, not the post before it"
    );

    let list = s.get_at("/api/v1/notifications", &ann.token, &mention.position()).await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let kinds: Vec<&str> =
        list.data().as_array().unwrap().iter().map(|n| n["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["mention", "added_to_conversation"], "newest first");
    assert_eq!(list.body["meta"]["unread_count"], 2);
    assert_eq!(list.data()[0]["message_id"], mention.data()["id"]);
    assert_eq!(list.data()[0]["actor_id"], json!(owner.id));
    let first = list.data()[0]["id"].as_str().unwrap().to_owned();

    // Nobody else can mark them; marking reaches the user's other devices live.
    let path = format!("/api/v1/notifications/{first}/read");
    s.call(Method::POST, &path, Some(&owner.token), None, &[]).await.assert_error(404, "not_found");
    let read = s.call(Method::POST, &path, Some(&ann.token), None, &[]).await;
    assert_eq!(read.status, 204, "{:?}", read.body);
    assert_eq!(cable.frame().await["event"]["event_type"], "NotificationRead");
    let unread =
        s.get_at("/api/v1/notifications?unread=true", &ann.token, read.header("x-position").unwrap()).await;
    assert_eq!(unread.data().as_array().unwrap().len(), 1);
    assert_eq!(unread.body["meta"]["unread_count"], 1);
    let all = s.call(Method::POST, "/api/v1/notifications/read_all", Some(&ann.token), None, &[]).await;
    assert_eq!(all.status, 204);
    let list = s.get_at("/api/v1/notifications", &ann.token, all.header("x-position").unwrap()).await;
    assert_eq!(list.body["meta"]["unread_count"], 0);
    assert!(list.data().as_array().unwrap().iter().all(|n| n["read_at"].is_string()));
    assert_eq!(
        s.get("/api/v1/notifications", &owner.token).await.data().as_array().unwrap().len(),
        0,
        "the owner was told nothing"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_added_later_gets_the_history_through_after_then_live_events() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let ann = s.invite_member(&owner, "ann@example.com").await;
    let stranger = s.register("stranger@example.com").await;
    let group = s.group(&owner, &[]).await;
    for i in 0..3 {
        post_message(&s, &owner, &group, &format!("early {i}")).await;
    }
    // Someone of another account is no one here.
    let memberships = format!("/api/v1/conversations/{group}/memberships");
    let before = s.events().await;
    let foreign = s.post(&memberships, &owner.token, json!({"user_id": stranger.id})).await;
    foreign.assert_error(404, "not_found");
    let direct = s
        .post("/api/v1/conversations", &owner.token, json!({"kind": "direct", "member_ids": [stranger.id]}))
        .await;
    direct.assert_error(422, "validation_failed");
    assert_eq!(s.events().await, before, "nothing written");

    let added = s.post(&memberships, &owner.token, json!({"user_id": ann.id})).await;
    assert_eq!(added.status, 201, "{:?}", added.body);
    let mut cable = s.cable(Some(&ann.token)).await;
    assert_eq!(cable.frame().await["type"], "welcome");
    assert_eq!(cable.subscribe("conversation", Some(&group), Some("0")).await["type"], "subscribed");
    let history = cable.events(6).await;
    let types: Vec<&str> = history.iter().map(|f| f["event"]["event_type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "ConversationStarted",
            "MemberAdded",
            "MessagePosted",
            "MessagePosted",
            "MessagePosted",
            "MemberAdded"
        ],
        "the whole history, from before they joined"
    );
    post_message(&s, &owner, &group, "live").await;
    assert_eq!(cable.events(1).await[0]["event"]["data"]["body"], "live");
    s.stop().await;
}
