//! A webhook receiver for tests: a real HTTP server on loopback that records every request it
//! gets and answers what the test tells it to, per path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tokio::sync::mpsc;

/// One request as received.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Delivery {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// Whether the Standard Webhooks library verifies it with `secret`.
    pub fn verifies_with(&self, secret: &str) -> bool {
        standardwebhooks::Webhook::new(secret)
            .expect("a whsec_ secret")
            .verify(&self.body, &self.headers)
            .is_ok()
    }
}

/// What a path answers: a status and extra headers; or no answer at all (the request hangs).
#[derive(Clone, Debug)]
pub enum Reply {
    Status(u16, Vec<(&'static str, String)>),
    Hang,
}

#[derive(Clone)]
struct Shared {
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    received: mpsc::UnboundedSender<Delivery>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    pub received: mpsc::UnboundedReceiver<Delivery>,
    task: tokio::task::JoinHandle<()>,
}

async fn receive(
    State(shared): State<Shared>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = shared.replies.lock().unwrap().get(&path).cloned().unwrap_or(Reply::Status(200, Vec::new()));
    let _ = shared.received.send(Delivery { path, headers, body });
    match reply {
        Reply::Hang => std::future::pending().await,
        Reply::Status(status, headers) => {
            let mut response = StatusCode::from_u16(status).unwrap().into_response();
            for (name, value) in headers {
                response.headers_mut().insert(name, HeaderValue::from_str(&value).unwrap());
            }
            response
        }
    }
}

impl Receiver {
    pub async fn start() -> Self {
        let (received_tx, received) = mpsc::unbounded_channel();
        let replies: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let shared = Shared { replies: replies.clone(), received: received_tx };
        let app = Router::new().route("/{*path}", post(receive)).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, replies, received, task }
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    /// What `path` answers from now on.
    pub fn answer(&self, path: &str, reply: Reply) {
        self.replies.lock().unwrap().insert(path.to_owned(), reply);
    }

    /// The next request, within `seconds`.
    pub async fn next(&mut self, seconds: u64) -> Delivery {
        tokio::time::timeout(std::time::Duration::from_secs(seconds), self.received.recv())
            .await
            .expect("a delivery in time")
            .expect("the receiver runs")
    }

    /// Whatever arrived so far, without waiting.
    pub fn drain(&mut self) -> Vec<Delivery> {
        let mut got = Vec::new();
        while let Ok(d) = self.received.try_recv() {
            got.push(d);
        }
        got
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
