//! Presence at 10,000 connections on one node: what each connection costs the server in memory,
//! and what keeping them (pings, presence refreshes, sweeps) costs it in CPU while they idle,
//! next to a bare axum WebSocket server holding the same connections with the same pings.
//!
//! Each server runs in a child process of the benchmark (this binary with `--child`), so its
//! memory and CPU are read from `/proc` apart from the clients'.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message as ServerMessage, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::signals::post;
use crate::Scratch;

/// Users the connections belong to (each holds `connections / USERS` of them, like open tabs).
const USERS: usize = 1000;
/// Users per group conversation: each user's presence is heard by the others of their group.
const GROUP: usize = 20;
/// Connections opened at once.
const OPENING: usize = 64;

/// Which server a child process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ChildServer {
    /// `parley serve`, as it ships.
    Parley,
    /// An axum WebSocket endpoint that holds each connection and pings it, nothing more (its
    /// read buffer as Parley's).
    Bare,
}

/// The child's side: serves until its standard input closes.
pub async fn child(kind: ChildServer, database_url: &str, ping_every: Duration) -> anyhow::Result<()> {
    let addr = match kind {
        ChildServer::Parley => {
            let mut config = parley_api::Config::new(database_url.to_owned());
            // The benchmark registers its thousand users from one address.
            config.auth_per_minute = 1_000_000;
            // As many connections as the HTTP suite's 32 clients keep busy, and the node's own;
            // fewer when several children share the server's connections.
            config.pool_size = std::env::var(CHILD_POOL).ok().and_then(|v| v.parse().ok()).unwrap_or(40);
            let app = parley_api::App::connect_with(
                &config,
                false,
                parley_commands::password::PasswordHasher::fast_insecure(),
            )
            .await?;
            let server = parley_api::http::Server::start(app, &crate::serving(config)).await?;
            let addr = server.addr;
            std::mem::forget(server);
            addr
        }
        ChildServer::Bare => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let router = axum::Router::new().route(
                "/api/v1/cable",
                axum::routing::get(move |ws: WebSocketUpgrade| async move { hold(ws, ping_every) }),
            );
            tokio::spawn(async move { axum::serve(listener, router).await });
            addr
        }
    };
    println!("listening {addr}");
    let mut rest = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut rest).await;
    std::process::exit(0)
}

/// The bare server's connection: a welcome, an answer to each text frame, a ping every period.
fn hold(ws: WebSocketUpgrade, ping_every: Duration) -> Response {
    ws.read_buffer_size(parley_api::http::cable::READ_BUFFER).on_upgrade(move |mut socket: WebSocket| async move {
        if socket.send(ServerMessage::Text(r#"{"type":"welcome"}"#.into())).await.is_err() {
            return;
        }
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        loop {
            tokio::select! {
                _ = ping.tick() => if socket.send(ServerMessage::Ping(Vec::new().into())).await.is_err() {
                    return;
                },
                incoming = socket.recv() => match incoming {
                    Some(Ok(ServerMessage::Text(_))) => {
                        if socket.send(ServerMessage::Text(r#"{"type":"subscribed"}"#.into())).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                },
            }
        }
    })
}

/// The child server's pool size, when not the default 40.
const CHILD_POOL: &str = "PARLEY_BENCH_CHILD_POOL_SIZE";

/// A server in a child process.
pub struct Served {
    child: Child,
    pub addr: String,
}

impl Served {
    pub async fn spawn(kind: ChildServer, database_url: &str) -> anyhow::Result<Self> {
        Self::spawn_with_pool(kind, database_url, 40).await
    }

    /// The same with a pool of `pool_size` connections.
    pub async fn spawn_with_pool(
        kind: ChildServer,
        database_url: &str,
        pool_size: u32,
    ) -> anyhow::Result<Self> {
        let kind = match kind {
            ChildServer::Parley => "parley",
            ChildServer::Bare => "bare",
        };
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--child", kind, "--database-url", database_url])
            .env(CHILD_POOL, pool_size.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines.next_line().await?.ok_or_else(|| anyhow::anyhow!("the child server ended"))?;
            if let Some(addr) = line.strip_prefix("listening ") {
                break addr.to_owned();
            }
        };
        Ok(Self { child, addr })
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().ok_or_else(|| anyhow::anyhow!("the child server ended"))
    }

    /// Resident memory, MiB.
    pub fn rss_mib(&self) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
        Ok(kib / 1024.0)
    }

    /// CPU time used so far (user and system), seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        crate::cpu::seconds_of(self.pid()?)
    }

    pub async fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

/// What holding the connections cost one server.
struct Held {
    opened_per_s: f64,
    memory_per_connection_kib: f64,
    baseline_mib: f64,
    held_mib: f64,
    idle_cpu_percent: f64,
    /// The same server's CPU over as long with no connection.
    empty_cpu_percent: f64,
    closed_early: usize,
}

/// Opens one connection per token in `tokens` (cycled to `connections`), each subscribing to its
/// user channel; measures memory, then the CPU of `idle` seconds, with every client answering pings.
async fn hold_connections(
    served: &Served,
    tokens: &[String],
    connections: usize,
    idle: Duration,
) -> anyhow::Result<(Held, JoinSet<()>)> {
    // One connection opened and closed, so the server's lazy parts are counted in the baseline.
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/api/v1/cable?token={}", served.addr, tokens[0]))
            .await?;
    drop(ws);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline_mib = served.rss_mib()?;
    let empty_cpu_percent = cpu_percent(served, idle).await?;
    let closed_early = Arc::new(AtomicUsize::new(0));
    let mut readers = JoinSet::new();
    let started = Instant::now();
    let mut opening = JoinSet::new();
    for i in 0..connections {
        if opening.len() >= OPENING {
            readers.spawn(reader(
                opening.join_next().await.ok_or_else(|| anyhow::anyhow!("none"))???,
                closed_early.clone(),
            ));
        }
        let url = format!("ws://{}/api/v1/cable?token={}", served.addr, tokens[i % tokens.len()]);
        opening.spawn(async move { open(url).await });
    }
    while let Some(ws) = opening.join_next().await {
        readers.spawn(reader(ws??, closed_early.clone()));
    }
    let opened_per_s = connections as f64 / started.elapsed().as_secs_f64();
    // What opening left behind (presence announcements, rosters) settles.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held_mib = served.rss_mib()?;
    let idle_cpu_percent = cpu_percent(served, idle).await?;
    let held = Held {
        opened_per_s,
        memory_per_connection_kib: (held_mib - baseline_mib) * 1024.0 / connections as f64,
        baseline_mib,
        held_mib,
        idle_cpu_percent,
        empty_cpu_percent,
        closed_early: closed_early.load(Ordering::Relaxed),
    };
    Ok((held, readers))
}

/// The server's CPU use over `window`, in % of one core.
async fn cpu_percent(served: &Served, window: Duration) -> anyhow::Result<f64> {
    let (before, started) = (served.cpu_seconds()?, Instant::now());
    tokio::time::sleep(window).await;
    Ok((served.cpu_seconds()? - before) / started.elapsed().as_secs_f64() * 100.0)
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A connection, welcomed and subscribed to its user channel.
async fn open(url: String) -> anyhow::Result<Socket> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    ws.send(Message::Text(json!({"command": "subscribe", "channel": "user"}).to_string().into())).await?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(text) = msg? {
            if text.as_str().contains("\"subscribed\"") {
                return Ok(ws);
            }
        }
    }
    anyhow::bail!("closed before it was subscribed")
}

/// Reads (and so answers the server's pings) until the connection ends; counts an end.
async fn reader(mut ws: Socket, closed: Arc<AtomicUsize>) {
    while let Some(Ok(_)) = ws.next().await {}
    closed.fetch_add(1, Ordering::Relaxed);
}

/// `USERS` users of one account in groups of `GROUP`; their access tokens.
async fn users(base: &str) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::new();
    let owner = post(
        &http,
        format!("{base}/api/v1/auth/register"),
        None,
        json!({"name": "Owner", "email": "owner@example.com", "password": "correct horse battery"}),
    )
    .await?;
    let owner_token = owner["data"]["access_token"].as_str().unwrap_or_default().to_owned();
    let mut members = futures::stream::iter(1..USERS)
        .map(|i| {
            let (http, owner_token) = (http.clone(), owner_token.clone());
            async move {
                let email = format!("user{i}@example.com");
                let invitation = post(
                    &http,
                    format!("{base}/api/v1/invitations"),
                    Some(&owner_token),
                    json!({"email": email, "role": "member"}),
                )
                .await?;
                let registered = post(
                    &http,
                    format!("{base}/api/v1/auth/register"),
                    None,
                    json!({
                        "name": format!("User {i}"), "email": email, "password": "correct horse battery",
                        "invitation_token": invitation["data"]["token"],
                    }),
                )
                .await?;
                anyhow::Ok((
                    registered["data"]["access_token"].as_str().unwrap_or_default().to_owned(),
                    registered["data"]["user"]["id"].as_str().unwrap_or_default().to_owned(),
                ))
            }
        })
        .buffer_unordered(16);
    let (mut tokens, mut ids) = (vec![owner_token.clone()], Vec::new());
    while let Some(member) = members.next().await {
        let (token, id) = member?;
        tokens.push(token);
        ids.push(id);
    }
    for group in ids.chunks(GROUP) {
        post(
            &http,
            format!("{base}/api/v1/conversations"),
            Some(&owner_token),
            json!({"kind": "group", "title": "presence", "member_ids": group}),
        )
        .await?;
    }
    Ok(tokens)
}

pub async fn run(server: &PgConnectOptions, connections: usize, idle: Duration) -> anyhow::Result<()> {
    let scratch = Scratch::new(server, "presence").await?;
    let url = scratch.options.to_url_lossy().to_string();
    let ttl = Duration::from_secs(parley_api::Config::new(url.clone()).presence_ttl_seconds);
    let idle = idle.max(ttl);

    let parley = Served::spawn(ChildServer::Parley, &url).await?;
    let tokens = users(&format!("http://{}", parley.addr)).await?;
    let (ours, readers) = hold_connections(&parley, &tokens, connections, idle).await?;
    let pool = parley_eventstore::db::pool(scratch.options.clone(), 2).await?;
    let (rows,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM presence_connections").fetch_one(&pool).await?;
    let (online,): (i64,) =
        sqlx::query_as("SELECT count(DISTINCT user_id) FROM presence_connections").fetch_one(&pool).await?;
    // Every client leaves at once: how long until the cluster knows them all offline.
    let leaving = Instant::now();
    drop(readers);
    let offline_after = loop {
        let (left,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM presence_connections").fetch_one(&pool).await?;
        if left == 0 {
            break leaving.elapsed();
        }
        anyhow::ensure!(leaving.elapsed() < Duration::from_secs(120), "{left} connections still present");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    pool.close().await;
    parley.stop().await;

    let bare = Served::spawn(ChildServer::Bare, &url).await?;
    let (limit, readers) = hold_connections(&bare, &tokens, connections, idle).await?;
    drop(readers);
    bare.stop().await;

    println!();
    println!(
        "presence: {connections} WebSocket connections on one node ({USERS} users, {} each, in groups of {GROUP}), \
         idle {} s (TTL {} s: pings every {:.1} s, presence refreshed every {:.1} s)",
        connections / USERS,
        idle.as_secs(),
        ttl.as_secs(),
        ttl.as_secs_f64() / 3.0,
        ttl.as_secs_f64() / 4.0
    );
    println!("  {:<34} {:>12} {:>12} {:>8}", "(CPU in % of one core)", "parley", "bare axum ws", "ratio");
    let line = |what: &str, ours: f64, limit: f64, unit: &str| {
        println!("  {what:<34} {ours:>9.1} {unit:<2} {limit:>9.1} {unit:<2} {:>8.2}", ours / limit);
    };
    line("memory per connection", ours.memory_per_connection_kib, limit.memory_per_connection_kib, "KiB");
    line("server CPU, idle connections", ours.idle_cpu_percent, limit.idle_cpu_percent, "%");
    line("server CPU, no connection", ours.empty_cpu_percent, limit.empty_cpu_percent, "%");
    line("connections opened per second", ours.opened_per_s, limit.opened_per_s, "/s");
    println!(
        "  resident memory: parley {:.0} -> {:.0} MiB, bare {:.0} -> {:.0} MiB",
        ours.baseline_mib, ours.held_mib, limit.baseline_mib, limit.held_mib
    );
    println!(
        "  presence rows {rows} for {online} users online; connections closed by the server while idle: \
         parley {}, bare {}",
        ours.closed_early, limit.closed_early
    );
    println!(
        "  all {connections} clients leave at once: presence empty after {:.2} s",
        offline_after.as_secs_f64()
    );
    scratch.drop_db().await
}
