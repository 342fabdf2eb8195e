//! Tests that walk the router's own list of endpoints (`routes::endpoints()`), so that a new
//! endpoint cannot be left out of them: every command POST honours `Idempotency-Key` (or refuses
//! it where its answer carries a secret), and a NUL character in any text field, query parameter
//! or path segment is refused with nothing written.

use parley_api::http::routes::{endpoints, Endpoint, IdempotencyKeys};
use reqwest::Method;
use serde_json::{json, Value};

use parley_tests::server::{TestServer, User};

/// An account with one of every resource, and a valid request for every endpoint.
pub(crate) struct World {
    pub(crate) s: TestServer,
    pub(crate) owner: User,
    pub(crate) member: User,
    /// In the account, not in the group yet.
    pub(crate) newcomer: User,
    pub(crate) group: String,
    pub(crate) message: String,
    pub(crate) role: String,
    pub(crate) invitation: String,
    pub(crate) key: String,
    pub(crate) reaction: String,
    /// One of `member`'s notifications (they were added to the group).
    pub(crate) notification: String,
    /// A job of the account in the dead set.
    pub(crate) job: String,
    /// A webhook subscription and an incoming hook of the account, and an event of it.
    pub(crate) subscription: String,
    pub(crate) hook: String,
    pub(crate) event: String,
    /// A call of the group, over (so a new one may start).
    pub(crate) call: String,
    /// A space beside the primary one, a live-stream experience in it, a scheduled stream of
    /// that, and the member's grant to it.
    pub(crate) space: String,
    pub(crate) experience: String,
    pub(crate) stream: String,
    pub(crate) grant: String,
}

impl World {
    pub(crate) async fn new() -> Self {
        Self::on(TestServer::start().await).await
    }

    /// One of every resource on the server `s`.
    pub(crate) async fn on(s: TestServer) -> Self {
        let owner = s.register("owner@example.com").await;
        let member = s.invite_member(&owner, "member@example.com").await;
        let newcomer = s.invite_member(&owner, "newcomer@example.com").await;
        let group = s.group(&owner, &[&member]).await;
        let posted = s
            .post(&format!("/api/v1/conversations/{group}/messages"), &owner.token, json!({"body": "hi"}))
            .await;
        let message = id_of(&posted);
        let role = id_of(
            &s.post("/api/v1/roles", &owner.token, json!({"name": "Helpers", "permissions": ["users.view"]}))
                .await,
        );
        let invitation = id_of(
            &s.post(
                "/api/v1/invitations",
                &owner.token,
                json!({"email": "later@example.com", "role": "member"}),
            )
            .await,
        );
        let key = id_of(
            &s.post("/api/v1/api_keys", &owner.token, json!({"name": "CI", "permissions": ["users.view"]}))
                .await,
        );
        let reacted =
            s.post("/api/v1/reactions", &member.token, json!({"message_id": message, "emoji": "👍"})).await;
        let reaction = id_of(&reacted);
        let told = s.get_at("/api/v1/notifications", &member.token, &reacted.position()).await;
        let notification =
            told.data()[0]["id"].as_str().expect("the member was added: a notification").to_owned();
        let job = s
            .t
            .app
            .jobs
            .enqueue_now(
                &parley_jobs::NewJob::new("test.walk", json!({})).account(owner.account_id.parse().unwrap()),
            )
            .await
            .unwrap()
            .unwrap();
        sqlx::query("UPDATE jobs SET state = 'discarded', completed_at = now() WHERE id = $1")
            .bind(job)
            .execute(s.t.app.store.pool())
            .await
            .unwrap();
        let job = job.to_string();
        let subscription = id_of(
            &s.post(
                "/api/v1/webhooks/subscriptions",
                &owner.token,
                json!({"url": "http://127.0.0.1:9/hook", "event_types": ["MessagePosted"]}),
            )
            .await,
        );
        let hook = id_of(
            &s.post(
                "/api/v1/webhooks/incoming",
                &owner.token,
                json!({"conversation_id": group, "name": "CI"}),
            )
            .await,
        );
        let (event,): (uuid::Uuid,) =
            sqlx::query_as("SELECT event_id FROM events WHERE event_type = 'MessagePosted'")
                .fetch_one(s.t.app.store.pool())
                .await
                .unwrap();
        let event = event.to_string();
        let started = s
            .post(&format!("/api/v1/conversations/{group}/calls"), &owner.token, json!({"kind": "audio"}))
            .await;
        let call = id_of(&started);
        let ended = s
            .call(
                Method::DELETE,
                &format!("/api/v1/conversations/{group}/calls/{call}"),
                Some(&owner.token),
                None,
                &[],
            )
            .await;
        assert!(ended.status.is_success(), "{:?}", ended.body);
        let space =
            id_of(&s.post("/api/v1/spaces", &owner.token, json!({"name": "Shows", "slug": "shows"})).await);
        let experience = id_of(
            &s.post(
                &format!("/api/v1/spaces/{space}/experiences"),
                &owner.token,
                json!({"name": "Launch", "experience_type": "live_stream", "price_cents": 0}),
            )
            .await,
        );
        let stream = id_of(
            &s.post(
                &format!("/api/v1/experiences/{experience}/streams"),
                &owner.token,
                json!({"title": "Day one", "starts_at": "2026-12-01T10:00:00Z"}),
            )
            .await,
        );
        let grant = id_of(
            &s.post(
                "/api/v1/access_grants",
                &owner.token,
                json!({"user_id": member.id, "experience_id": experience}),
            )
            .await,
        );
        Self {
            s,
            owner,
            member,
            newcomer,
            group,
            message,
            role,
            invitation,
            key,
            reaction,
            notification,
            job,
            subscription,
            hook,
            event,
            call,
            space,
            experience,
            stream,
            grant,
        }
    }

    /// `template` with its parameters filled with this world's ids.
    pub(crate) fn path(&self, template: &str) -> String {
        let id = match template.trim_start_matches("/api/v1/").split('/').next().unwrap_or_default() {
            "users" => &self.member.id,
            "invitations" => &self.invitation,
            "conversations" => &self.group,
            "roles" => &self.role,
            "api_keys" => &self.key,
            "reactions" => &self.reaction,
            "notifications" => &self.notification,
            "admin" => &self.job,
            "spaces" => &self.space,
            "experiences" => &self.experience,
            "streams" => &self.stream,
            "access_grants" => &self.grant,
            "webhooks" if template.starts_with("/api/v1/webhooks/incoming") => &self.hook,
            "webhooks" => &self.subscription,
            _ => "",
        };
        template
            .replace("{id}", id)
            .replace("{message_id}", &self.message)
            .replace("{call_id}", &self.call)
            .replace("{user_id}", &self.member.id)
            .replace("{stream_type}", "Conversation")
            .replace("{stream_id}", &self.group)
            .replace("{name}", "messages")
    }

    /// Who sends a request to `template`: the member for their own notification, else the owner.
    pub(crate) fn token(&self, template: &str) -> &str {
        if template.contains("/notifications/{id}") {
            &self.member.token
        } else {
            &self.owner.token
        }
    }

    /// A valid body for every endpoint that takes one.
    fn body(&self, e: &Endpoint) -> Option<Value> {
        if e.method == Method::GET || e.method == Method::DELETE {
            return None;
        }
        let body = match e.path.as_str() {
            "/api/v1/notifications/{id}/read" | "/api/v1/notifications/read_all" => return None,
            "/api/v1/admin/jobs/{id}/retry" | "/api/v1/webhooks/subscriptions/{id}/rotate" => return None,
            "/api/v1/admin/projections/{name}/rebuild" => return None,
            "/api/v1/conversations/{id}/calls/{call_id}/accept"
            | "/api/v1/conversations/{id}/calls/{call_id}/decline" => return None,
            "/api/v1/conversations/{id}/calls" => json!({"kind": "audio"}),
            // Signed, not authenticated: a body without a signature is refused before it is read.
            "/api/v1/webhooks/incoming/{id}" | "/api/v1/webhooks/stripe" => return None,
            "/api/v1/streams/{id}/start" | "/api/v1/streams/{id}/end" | "/api/v1/streams/{id}/join" => {
                return None
            }
            "/api/v1/spaces" => json!({"name": "Walks", "slug": "walks", "description": "walking"}),
            "/api/v1/spaces/{id}" => json!({"name": "Walked", "description": "walked"}),
            "/api/v1/spaces/{id}/experiences" => {
                json!({"name": "Walk", "experience_type": "course", "price_cents": 500, "currency": "EUR"})
            }
            "/api/v1/experiences/{id}" => json!({"name": "Walked", "published": true}),
            "/api/v1/experiences/{id}/streams" => {
                json!({"title": "Walk", "starts_at": "2026-12-02T10:00:00Z"})
            }
            "/api/v1/access_grants" => json!({"user_id": self.newcomer.id, "experience_id": self.experience}),
            "/api/v1/webhooks/subscriptions" => json!({
                "url": "http://127.0.0.1:9/walk", "event_types": ["MessagePosted"], "description": "walking"
            }),
            "/api/v1/webhooks/subscriptions/{id}" => {
                json!({"description": "walked", "event_types": ["MessageEdited"]})
            }
            "/api/v1/webhooks/subscriptions/{id}/resend" => json!({"event_id": self.event}),
            "/api/v1/webhooks/subscriptions/{id}/recover" => json!({"since": "2026-01-01T00:00:00Z"}),
            "/api/v1/webhooks/incoming" => json!({"conversation_id": self.group, "name": "Walker"}),
            "/api/v1/auth/register" => json!({
                "name": "Nul", "email": "nul@example.com", "password": "correct horse battery", "account_name": "Nul"
            }),
            "/api/v1/auth/login" => {
                json!({"email": "owner@example.com", "password": "correct horse battery"})
            }
            "/api/v1/auth/refresh" => json!({"refresh_token": "not-a-token"}),
            "/api/v1/invitations" => json!({"email": "walker@example.com", "role": "member"}),
            "/api/v1/api_keys" => json!({"name": "Walker", "permissions": ["users.view"]}),
            "/api/v1/roles" => json!({"name": "Walkers", "permissions": ["users.view"]}),
            "/api/v1/roles/{id}" => json!({"name": "Helpers too", "permissions": ["users.view"]}),
            "/api/v1/users/{id}" => {
                json!({"name": "M", "display_name": "Em", "bio": "b", "avatar_url": "https://a/b.png"})
            }
            "/api/v1/users/{id}/roles" => json!({"roles": ["member"]}),
            "/api/v1/users/{id}/password" => {
                json!({"current_password": "correct horse battery", "new_password": "another password"})
            }
            "/api/v1/conversations" => {
                json!({"kind": "group", "title": "Walks", "member_ids": [self.member.id]})
            }
            "/api/v1/conversations/{id}" => json!({"title": "Renamed", "topic": "walking"}),
            "/api/v1/conversations/{id}/memberships" => {
                json!({"user_id": self.newcomer.id, "role": "member"})
            }
            "/api/v1/conversations/{id}/messages" => json!({"body": "walking"}),
            "/api/v1/conversations/{id}/messages/{message_id}" => json!({"body": "edited"}),
            "/api/v1/conversations/{id}/read" => json!({"message_id": self.message}),
            "/api/v1/reactions" => json!({"message_id": self.message, "emoji": "🎉"}),
            other => panic!("{} {other} takes a body: give it a valid one in World::body", e.method),
        };
        Some(body)
    }
}

pub(crate) fn id_of(a: &parley_tests::server::Answer) -> String {
    assert!(a.status.is_success(), "{:?}", a.body);
    a.data()["id"].as_str().expect("an id").to_owned()
}

/// Every command POST, sent twice with one `Idempotency-Key` and body: the second answer is the
/// first, marked replayed, and appends nothing. POSTs whose answer carries a secret refuse keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_post_honours_its_idempotency_key_and_appends_nothing_when_replayed() {
    let w = World::new().await;
    let posts: Vec<Endpoint> = endpoints().into_iter().filter(|e| e.method == Method::POST).collect();
    assert!(posts.len() >= 12, "the router lists its POSTs: {posts:?}");
    let mut honoured = 0;
    for (i, e) in posts.iter().enumerate() {
        let path = w.path(&e.path);
        let key = format!("walk-{i}");
        let headers = [("idempotency-key", key.as_str())];
        let body = w.body(e);
        match e.idempotency {
            IdempotencyKeys::Refused => {
                let before = w.s.events().await;
                let a = w.s.call(Method::POST, &path, Some(w.token(&e.path)), body, &headers).await;
                a.assert_error(400, "idempotency_not_supported");
                assert_eq!(w.s.events().await, before, "{path}: nothing written");
            }
            IdempotencyKeys::Honoured => {
                honoured += 1;
                let first =
                    w.s.call(Method::POST, &path, Some(w.token(&e.path)), body.clone(), &headers).await;
                assert!(first.status.is_success(), "{path}: {:?}", first.body);
                assert_eq!(first.header("idempotent-replayed"), None, "{path}");
                if path.ends_with("/calls") {
                    // A started call is rung by a process manager in the background: let that
                    // happen first, so the count below sees only what the replay writes.
                    w.s.rung(first.data()["id"].as_str().unwrap()).await;
                }
                if path.ends_with("/end") {
                    // An ended stream is archived by a job in the background: likewise.
                    let stream = first.data()["id"].as_str().unwrap();
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                    loop {
                        let (archived,): (bool,) = sqlx::query_as(
                            "SELECT EXISTS (SELECT 1 FROM events WHERE event_type = 'StreamArchived' AND stream_id = $1)",
                        )
                        .bind(stream)
                        .fetch_one(w.s.t.app.store.pool())
                        .await
                        .unwrap();
                        if archived {
                            break;
                        }
                        assert!(std::time::Instant::now() < deadline, "the ended stream was never archived");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                }
                let before = w.s.events().await;
                let again = w.s.call(Method::POST, &path, Some(w.token(&e.path)), body, &headers).await;
                assert_eq!(again.header("idempotent-replayed"), Some("true"), "{path}: {:?}", again.body);
                assert_eq!(again.status, first.status, "{path}");
                assert_eq!(again.body, first.body, "{path}: the original answer");
                assert_eq!(again.header("x-position"), first.header("x-position"), "{path}");
                assert_eq!(w.s.events().await, before, "{path}: a replay appends nothing");
            }
            IdempotencyKeys::Signed => {
                let before = w.s.events().await;
                let a =
                    w.s.call(Method::POST, &path, None, Some(json!({"text": "unsigned"})), &headers).await;
                a.assert_error(401, "unauthorized");
                assert_eq!(w.s.events().await, before, "{path}: nothing written");
            }
            IdempotencyKeys::NotApplicable => panic!("a POST is honoured, refused or signed: {e:?}"),
        }
    }
    assert!(honoured >= 8, "the command POSTs: {honoured}");
    w.s.stop().await;
}

/// Every string of a JSON body (walked leaf by leaf, in arrays too).
fn string_leaves(value: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        Value::String(_) => out.push(at.clone()),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                at.push(i.to_string());
                string_leaves(v, at, out);
                at.pop();
            }
        }
        Value::Object(fields) => {
            for (k, v) in fields {
                at.push(k.clone());
                string_leaves(v, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn with_nul_at(body: &Value, path: &[String]) -> Value {
    let mut body = body.clone();
    let mut slot = &mut body;
    for step in path {
        slot = match slot {
            Value::Array(items) => &mut items[step.parse::<usize>().unwrap()],
            other => &mut other[step.as_str()],
        };
    }
    *slot = json!("a\u{0}b");
    body
}

/// Query parameters of the API, each sent to every GET endpoint.
const QUERY_PARAMETERS: &[&str] = &[
    "search",
    "kind",
    "before",
    "after",
    "limit",
    "unread",
    "page",
    "per_page",
    "stream_type",
    "stream_id",
    "event_type",
    "actor_id",
    "correlation_id",
    "since",
    "until",
    "as_of",
    "version",
    "token",
];

/// A NUL character anywhere a client can put text (every string of every body, every query
/// parameter, every path segment) is a 4xx: 422 naming the field in a body, 400 in the URL. Never
/// a 500, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_in_any_field_parameter_or_path_is_refused_and_nothing_is_written() {
    let w = World::new().await;
    let before = w.s.events().await;
    let mut fields = 0;
    for e in endpoints() {
        let Some(body) = w.body(&e) else { continue };
        let path = w.path(&e.path);
        let mut leaves = Vec::new();
        string_leaves(&body, &mut Vec::new(), &mut leaves);
        for leaf in leaves {
            fields += 1;
            let sent = with_nul_at(&body, &leaf);
            let a = w.s.call(e.method.clone(), &path, Some(w.token(&e.path)), Some(sent), &[]).await;
            a.assert_error(422, "validation_failed");
            let field = leaf.iter().fold(String::new(), |name, step| match step.parse::<usize>() {
                Ok(i) => format!("{name}[{i}]"),
                Err(_) if name.is_empty() => step.clone(),
                Err(_) => format!("{name}.{step}"),
            });
            assert!(
                a.body["details"].get(&field).is_some(),
                "{} {path}: names {field}: {:?}",
                e.method,
                a.body
            );
        }
    }
    assert!(fields >= 30, "every text field of every body: {fields}");
    for e in endpoints().into_iter().filter(|e| e.path.contains('{')) {
        for param in
            ["{id}", "{message_id}", "{user_id}", "{stream_type}", "{stream_id}", "{call_id}", "{name}"]
        {
            if !e.path.contains(param) {
                continue;
            }
            let path = w.path(&e.path.replace(param, "a%00b"));
            let a = w.s.call(e.method.clone(), &path, Some(w.token(&e.path)), w.body(&e), &[]).await;
            a.assert_error(400, "bad_request");
        }
    }
    for e in endpoints().into_iter().filter(|e| e.method == Method::GET) {
        for param in QUERY_PARAMETERS {
            let path = format!("{}?{param}=a%00b", w.path(&e.path));
            let a = w.s.call(Method::GET, &path, Some(w.token(&e.path)), None, &[]).await;
            a.assert_error(400, "bad_request");
        }
    }
    assert_eq!(w.s.events().await, before, "nothing was written");
    w.s.stop().await;
}

/// A message has one shape: the POST answer, the frame that carries it on the cable, the PATCH
/// answer and a page of the list show the same fields, with the same values where nothing
/// changed them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reads_the_same_through_post_patch_list_and_the_websocket_frame() {
    let w = World::new().await;
    let mut cable = w.s.cable(Some(&w.member.token)).await;
    assert_eq!(cable.frame().await["type"], "welcome");
    assert_eq!(cable.subscribe("conversation", Some(&w.group), None).await["type"], "subscribed");
    let messages = format!("/api/v1/conversations/{}/messages", w.group);
    let posted = w.s.post(&messages, &w.owner.token, json!({"body": "look @Member"})).await;
    assert_eq!(posted.status, 201, "{:?}", posted.body);
    let posted = posted.data().clone();
    let id = posted["id"].as_str().unwrap().to_owned();
    let framed = loop {
        let f = cable.events(1).await.remove(0);
        if f["event"]["event_type"] == "MessagePosted" && f["message"]["id"] == json!(id) {
            break f["message"].clone();
        }
    };
    let edited =
        w.s.call(
            Method::PATCH,
            &format!("{messages}/{id}"),
            Some(&w.owner.token),
            Some(json!({"body": "look again @Member"})),
            &[],
        )
        .await;
    assert_eq!(edited.status, 200, "{:?}", edited.body);
    let page = w.s.get_at(&messages, &w.owner.token, &edited.position()).await;
    let listed = page.data().as_array().unwrap().iter().find(|m| m["id"] == json!(id)).unwrap().clone();
    let edited = edited.data().clone();

    let fields = |v: &Value| {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(fields(&posted), fields(&framed), "POST and frame");
    assert_eq!(fields(&posted), fields(&edited), "POST and PATCH");
    assert_eq!(fields(&posted), fields(&listed), "POST and list");
    assert_eq!(posted, framed, "the frame carries the message as posted");
    assert_eq!(edited, listed, "the PATCH answers what the list shows");
    for unchanged in ["id", "conversation_id", "author_id", "created_at", "cursor", "mentions"] {
        assert_eq!(posted[unchanged], listed[unchanged], "{unchanged}");
    }
    assert_eq!(posted["mentions"], json!([w.member.id]));
    assert_eq!((posted["version"].clone(), listed["version"].clone()), (json!(1), json!(2)));
    assert_eq!(listed["body"], "look again @Member");
    assert!(posted["edited_at"].is_null() && listed["edited_at"].is_string());
    w.s.stop().await;
}
