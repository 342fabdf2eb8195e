//! The real server on a random port, with typed request helpers.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use parley_api::config::{Config, Secret};
use parley_api::http::Server;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::TestApp;

/// The JWT secret of every test server, so that servers on one database share tokens.
const SECRET: &str = "test-secret-test-secret-test-secret";

/// A server over its own database, and an HTTP client.
pub struct TestServer {
    pub t: TestApp,
    pub server: Option<Server>,
    pub base: String,
    pub http: reqwest::Client,
}

/// An answer: status, headers and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The log position of a command's answer.
    pub fn position(&self) -> String {
        self.body["meta"]["position"].as_str().expect("a position").to_owned()
    }

    /// Asserts the error envelope with this status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.body);
        assert_eq!(self.body["success"], json!(false), "{:?}", self.body);
        assert_eq!(self.body["code"], json!(code), "{:?}", self.body);
        assert!(self.body["error"].is_string());
    }
}

/// A registered user: token and ids.
#[derive(Clone, Debug)]
pub struct User {
    pub token: String,
    pub id: String,
    pub account_id: String,
    pub position: String,
}

/// Requests per user or key per minute on test servers: far more than any test makes, so only
/// the tests of the limit (which set their own) meet it.
pub const TEST_API_RATE_PER_MINUTE: u32 = 1_000_000;

/// `config` as test servers use it: a free port, the shared token secret, a per-credential
/// request limit no test reaches unless it sets one (after this).
pub fn serving(mut config: Config) -> Config {
    config.bind = "127.0.0.1:0".into();
    config.jwt_secret = Some(Secret::new(SECRET));
    config.api_rate_per_minute = TEST_API_RATE_PER_MINUTE;
    config
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server whose configuration `adjust` changes first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let t = TestApp::with_config(20, |config| {
            config.api_rate_per_minute = TEST_API_RATE_PER_MINUTE;
            adjust(config);
        })
        .await;
        let mut config = serving(t.config.clone());
        // `adjust` has the last word.
        config.api_rate_per_minute = t.config.api_rate_per_minute;
        let server = Server::start(t.app.clone(), &config).await.expect("server starts");
        let base = format!("http://{}", server.addr);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        Self { t, server: Some(server), base, http }
    }

    /// Another server on the same database, as another process would be: its own pool, store,
    /// wake-ups and in-memory state (denylists, directories), no workers; `adjust` its configuration.
    pub async fn second_server(&self, adjust: impl FnOnce(&mut Config)) -> Server {
        let mut config = serving(Config::new(self.t.db.url()));
        config.pool_size = 5;
        config.webhooks_allow_private = true;
        config.workers = false;
        adjust(&mut config);
        let hasher = parley_commands::password::PasswordHasher::fast_insecure();
        let app = parley_api::App::connect_with(&config, false, hasher).await.expect("second app connects");
        Server::start(app, &config).await.expect("second server starts")
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        self.t.finish().await;
    }

    /// Any request; `body` is sent as JSON when given.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("request is sent");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, headers, body }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, Some(token), None, &[]).await
    }

    pub async fn get_at(&self, path: &str, token: &str, min_position: &str) -> Answer {
        self.call(Method::GET, path, Some(token), None, &[("x-min-position", min_position)]).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(token), Some(body), &[]).await
    }

    /// Logs `email` in with the password every test user has; the answer's `data` (tokens, user).
    pub async fn login(&self, email: &str) -> Value {
        let a = self
            .call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"email": email, "password": "correct horse battery"})),
                &[],
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        a.body["data"].clone()
    }

    /// Registers a new account's owner.
    pub async fn register(&self, email: &str) -> User {
        let a = self
            .call(
                Method::POST,
                "/api/v1/auth/register",
                None,
                Some(json!({"name": "Someone", "email": email, "password": "correct horse battery", "account_name": "Acme"})),
                &[],
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        user(&a)
    }

    /// Invites `email` into `owner`'s account as a member and registers them.
    pub async fn invite_member(&self, owner: &User, email: &str) -> User {
        self.invite_as(owner, email, "member").await
    }

    /// Invites `email` into `inviter`'s account with `role` and registers them.
    pub async fn invite_as(&self, inviter: &User, email: &str, role: &str) -> User {
        let inv =
            self.post("/api/v1/invitations", &inviter.token, json!({"email": email, "role": role})).await;
        assert_eq!(inv.status, StatusCode::CREATED, "{:?}", inv.body);
        let token = inv.data()["token"].as_str().unwrap().to_owned();
        let a = self
            .call(
                Method::POST,
                "/api/v1/auth/register",
                None,
                Some(json!({"name": "Member", "email": email, "password": "correct horse battery", "invitation_token": token})),
                &[],
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        user(&a)
    }

    /// Starts a group owned by `owner` with `members`; returns its id once the read side has it
    /// (what reads its members, presence's audience among them, sees the group).
    pub async fn group(&self, owner: &User, members: &[&User]) -> String {
        let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
        let a = self
            .post(
                "/api/v1/conversations",
                &owner.token,
                json!({"kind": "group", "title": "General", "member_ids": ids}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        let seen = self.get_at("/api/v1/conversations", &owner.token, &a.position()).await;
        assert_eq!(seen.status, StatusCode::OK, "{:?}", seen.body);
        a.data()["id"].as_str().unwrap().to_owned()
    }

    /// Waits until the call `id` has rung (its `CallRinging` is in the log).
    pub async fn rung(&self, id: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM events WHERE event_type = 'CallRinging' AND stream_id = $1",
            )
            .bind(id)
            .fetch_one(self.t.app.store.pool())
            .await
            .unwrap();
            if n == 1 {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "the call {id} never rang");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Number of events in the log.
    pub async fn events(&self) -> i64 {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM events").fetch_one(self.t.app.store.pool()).await.unwrap();
        n
    }

    /// A WebSocket connection with `token` (or without one).
    pub async fn cable(&self, token: Option<&str>) -> Cable {
        let url = match token {
            Some(t) => format!("ws://{}/api/v1/cable?token={t}", self.base.trim_start_matches("http://")),
            None => format!("ws://{}/api/v1/cable", self.base.trim_start_matches("http://")),
        };
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
        Cable { ws }
    }
}

fn user(a: &Answer) -> User {
    User {
        token: a.data()["access_token"].as_str().unwrap().to_owned(),
        id: a.data()["user"]["id"].as_str().unwrap().to_owned(),
        account_id: a.data()["account"]["id"].as_str().unwrap().to_owned(),
        position: a.position(),
    }
}

/// A WebSocket client speaking the cable protocol.
pub struct Cable {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Cable {
    pub async fn send(&mut self, frame: Value) {
        self.ws.send(Message::Text(frame.to_string().into())).await.unwrap();
    }

    /// The next JSON frame, or `None` when the server closed (with its close code).
    pub async fn next(&mut self) -> Result<Value, Option<u16>> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("a frame within 10 s");
            match msg {
                Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(t.as_str()).unwrap()),
                Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(None),
            }
        }
    }

    pub async fn frame(&mut self) -> Value {
        self.next().await.expect("a frame")
    }

    /// Subscribes and returns the `subscribed` (or `rejected`) answer.
    pub async fn subscribe(&mut self, channel: &str, id: Option<&str>, after: Option<&str>) -> Value {
        let mut cmd = json!({"command": "subscribe", "channel": channel});
        if let Some(id) = id {
            cmd["id"] = json!(id);
        }
        if let Some(after) = after {
            cmd["after"] = json!(after);
        }
        self.send(cmd).await;
        self.frame().await
    }

    /// The next `n` event frames.
    pub async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let f = self.frame().await;
            if f["type"] == "event" {
                out.push(f);
            }
        }
        out
    }
}
