//! Signals and calls: the relay's latency between two nodes on one database at 1,000 signals/s
//! (from twenty connections of one user on the first node to one of another user on the second),
//! and a call's start (its POST answered) to the callee's `CallRinging` frame on the second node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use parley_api::http::Server;
use parley_api::{App, Config};
use parley_commands::password::PasswordHasher;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;
use tokio_tungstenite::tungstenite::Message;

use crate::http::percentile;
use crate::Scratch;

/// Connections the sender spreads its signals over (each may send 50 a second).
const SENDERS: usize = 20;
const CALLS: usize = 100;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// POSTs `body` as JSON (with a bearer `token` when given); the answer's JSON, or why not.
pub async fn post(
    http: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: Value,
) -> anyhow::Result<Value> {
    let mut req = http.post(url).json(&body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let r = req.send().await?;
    anyhow::ensure!(r.status().is_success(), "{}: {}", r.status(), r.text().await?);
    Ok(r.json().await?)
}

async fn cable(addr: &str, token: &str) -> anyhow::Result<Socket> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/cable?token={token}")).await?;
    ws.next().await; // welcome
    Ok(ws)
}

/// The next text frame that satisfies `wanted`.
async fn until(ws: &mut Socket, wanted: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next()).await?;
        if let Some(Ok(Message::Text(text))) = msg {
            let frame: Value = serde_json::from_str(text.as_str())?;
            if wanted(&frame) {
                return Ok(frame);
            }
        }
    }
}

pub async fn run(server: &PgConnectOptions, seconds: u64) -> anyhow::Result<()> {
    let scratch = Scratch::new(server, "signals").await?;
    let mut config = Config::new(scratch.options.to_url_lossy().to_string());
    config.pool_size = 24;
    let app = App::connect_with(&config, false, PasswordHasher::fast_insecure()).await?;
    let first = Server::start(app, &crate::serving(config.clone())).await?;
    config.workers = false;
    let other = App::connect_with(&config, false, PasswordHasher::fast_insecure()).await?;
    let second = Server::start(other, &crate::serving(config)).await?;
    let (a, b) = (first.addr.to_string(), second.addr.to_string());
    let http = reqwest::Client::new();

    let alice = post(
        &http,
        format!("http://{a}/api/v1/auth/register"),
        None,
        json!({
            "name": "Alice", "email": "alice@example.com", "password": "correct horse battery"
        }),
    )
    .await?;
    let alice_token = alice["data"]["access_token"].as_str().unwrap_or_default().to_owned();
    let invitation = post(
        &http,
        format!("http://{a}/api/v1/invitations"),
        Some(&alice_token),
        json!({"email": "bob@example.com", "role": "member"}),
    )
    .await?;
    let bob = post(
        &http,
        format!("http://{a}/api/v1/auth/register"),
        None,
        json!({
            "name": "Bob", "email": "bob@example.com", "password": "correct horse battery",
            "invitation_token": invitation["data"]["token"]
        }),
    )
    .await?;
    let bob_token = bob["data"]["access_token"].as_str().unwrap_or_default().to_owned();
    let bob_id = bob["data"]["user"]["id"].clone();
    let group = post(
        &http,
        format!("http://{a}/api/v1/conversations"),
        Some(&alice_token),
        json!({
            "kind": "group", "title": "bench", "member_ids": [bob_id]
        }),
    )
    .await?;
    let calls_url =
        format!("http://{a}/api/v1/conversations/{}/calls", group["data"]["id"].as_str().unwrap_or_default());

    println!();
    println!(
        "signals: two nodes on one database; relay at 1,000 signals/s for {seconds} s; {CALLS} calls rung"
    );

    // Call start to the callee's CallRinging frame on the other node.
    let mut bob_user = cable(&b, &bob_token).await?;
    bob_user
        .send(Message::Text(json!({"command": "subscribe", "channel": "user"}).to_string().into()))
        .await?;
    until(&mut bob_user, |f| f["type"] == "presence_roster").await?;
    let mut rings = Vec::with_capacity(CALLS);
    let mut last_call = String::new();
    for _ in 0..CALLS {
        let started = post(&http, calls_url.clone(), Some(&alice_token), json!({"kind": "audio"})).await?;
        let answered = Instant::now();
        let call = started["data"]["id"].as_str().unwrap_or_default().to_owned();
        until(&mut bob_user, |f| {
            f["event"]["event_type"] == "CallRinging" && f["event"]["data"]["call_id"] == call.as_str()
        })
        .await?;
        rings.push(answered.elapsed());
        if rings.len() < CALLS {
            let r = http.delete(format!("{calls_url}/{call}")).bearer_auth(&alice_token).send().await?;
            anyhow::ensure!(r.status().is_success(), "hang up: {}", r.status());
        }
        last_call = call;
    }
    rings.sort();
    println!(
        "  call start (POST answered) to the callee's CallRinging frame: p50 {:.1} ms, p99 {:.1} ms",
        percentile(&rings, 0.5),
        percentile(&rings, 0.99)
    );

    // The relay: the last call lives; alice's connections on the first node signal bob's on the
    // second.
    let mut receiver = cable(&b, &bob_token).await?;
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let total = 1000 * seconds;
    let per_sender = total / SENDERS as u64;
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..SENDERS as u64 {
        let mut ws = cable(&a, &alice_token).await?;
        let (sent, call, to) = (sent.clone(), last_call.clone(), bob_id.clone());
        senders.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 * SENDERS as u64 / 1000));
            for i in 0..per_sender {
                tick.tick().await;
                let seq = s * per_sender + i;
                if let Ok(mut sent) = sent.lock() {
                    sent.insert(seq, Instant::now());
                }
                let frame = json!({"command": "signal", "call_id": call, "to_user_id": to, "signal": {"type": "ice", "seq": seq}});
                ws.send(Message::Text(frame.to_string().into())).await?;
            }
            // Keep the connection until its signals are through.
            tokio::time::sleep(Duration::from_secs(2)).await;
            anyhow::Ok(())
        });
    }
    let mut latencies = Vec::with_capacity(total as usize);
    let mut refused = 0u64;
    let deadline = Instant::now() + Duration::from_secs(seconds + 30);
    while (latencies.len() as u64) < total && Instant::now() < deadline {
        let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(Duration::from_secs(5), receiver.next()).await
        else {
            break;
        };
        let frame: Value = serde_json::from_str(text.as_str())?;
        if frame["type"] == "signal" {
            let seq = frame["signal"]["seq"].as_u64().unwrap_or_default();
            let at = sent.lock().ok().and_then(|s| s.get(&seq).copied());
            if let Some(at) = at {
                latencies.push(at.elapsed());
            }
        } else if frame["type"] == "error" {
            refused += 1;
        }
    }
    while senders.join_next().await.is_some() {}
    latencies.sort();
    println!(
        "  relay across nodes at 1,000 signals/s: {} of {total} received, p50 {:.1} ms, p99 {:.1} ms{}",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        if refused > 0 { format!(" ({refused} refused)") } else { String::new() }
    );
    drop(receiver);
    second.stop().await;
    first.stop().await;
    scratch.drop_db().await
}
