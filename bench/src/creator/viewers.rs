//! Figure 1: viewers of one live stream joining, and their counts converging.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::http::percentile;
use crate::signals::post;

use super::{text, Owner, Socket, OPENING, PATIENCE, TABS};

/// `users` members of the account, each granted `experience`: their ids and access tokens, in
/// order of registration.
async fn viewers(
    http: &reqwest::Client,
    base: &str,
    owner: &Owner,
    experience: &str,
    users: usize,
) -> anyhow::Result<Vec<String>> {
    let mut members = futures::stream::iter(0..users)
        .map(|i| {
            let (http, token) = (http.clone(), owner.token.clone());
            let experience = experience.to_owned();
            async move {
                let email = format!("viewer{i}@example.com");
                let invitation = post(
                    &http,
                    format!("{base}/api/v1/invitations"),
                    Some(&token),
                    json!({"email": email, "role": "member"}),
                )
                .await?;
                let registered = post(
                    &http,
                    format!("{base}/api/v1/auth/register"),
                    None,
                    json!({
                        "name": format!("Viewer {i}"), "email": email, "password": "correct horse battery",
                        "invitation_token": invitation["data"]["token"],
                    }),
                )
                .await?;
                let user = text(&registered["data"]["user"]["id"]);
                post(
                    &http,
                    format!("{base}/api/v1/access_grants"),
                    Some(&token),
                    json!({"user_id": user, "experience_id": experience}),
                )
                .await?;
                anyhow::Ok((i, text(&registered["data"]["access_token"])))
            }
        })
        .buffer_unordered(16);
    let mut tokens = vec![String::new(); users];
    while let Some(member) = members.next().await {
        let (i, token) = member?;
        tokens[i] = token;
    }
    Ok(tokens)
}

/// Text frames until one whose `type` is `wanted` (within `PATIENCE`); the frame.
async fn until(ws: &mut Socket, wanted: &str) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("no {wanted} within {PATIENCE:?}"))?
            .ok_or_else(|| anyhow::anyhow!("closed before {wanted}"))??;
        if let Message::Text(text) = msg {
            let frame: Value = serde_json::from_str(text.as_str())?;
            if frame["type"] == wanted {
                return Ok(frame);
            }
        }
    }
}

/// What a phase of openings measured.
struct Opened {
    /// Sorted.
    latencies: Vec<Duration>,
    failures: usize,
    /// When the last opening finished.
    last: Instant,
    /// From the first connect to the last opening's end.
    took: Duration,
    /// The connections, read (and their pings answered) until dropped.
    held: JoinSet<()>,
}

/// Opens `tokens.len()` connections, `OPENING` at a time, each doing `open` (whose latency is
/// taken from before the connect to its end), then `read`ing until dropped.
async fn open_all<O, OF, R, RF>(url: &str, tokens: &[String], open: O, read: R) -> Opened
where
    O: Fn(usize, Socket) -> OF + Send + Sync + 'static,
    OF: std::future::Future<Output = anyhow::Result<Socket>> + Send,
    R: Fn(usize, Socket) -> RF + Send + Sync + 'static,
    RF: std::future::Future<Output = ()> + Send,
{
    let (open, read) = (Arc::new(open), Arc::new(read));
    let gate = Arc::new(Semaphore::new(OPENING));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut held = JoinSet::new();
    let started = Instant::now();
    for (i, token) in tokens.iter().enumerate() {
        let permit = gate.clone().acquire_owned().await.expect("the gate stays open");
        let (open, read, tx) = (open.clone(), read.clone(), tx.clone());
        let url = format!("{url}?token={token}");
        held.spawn(async move {
            let t = Instant::now();
            let opened = async {
                let (ws, _) = tokio_tungstenite::connect_async(url).await?;
                open(i, ws).await
            }
            .await;
            drop(permit);
            match opened {
                Ok(ws) => {
                    let _ = tx.send(Some(t.elapsed()));
                    read(i, ws).await;
                }
                Err(e) => {
                    eprintln!("  connection {i}: {e}");
                    let _ = tx.send(None);
                }
            }
        });
    }
    drop(tx);
    let (mut latencies, mut failures) = (Vec::with_capacity(tokens.len()), 0);
    for _ in 0..tokens.len() {
        match rx.recv().await {
            Some(Some(latency)) => latencies.push(latency),
            _ => failures += 1,
        }
    }
    latencies.sort();
    Opened { latencies, failures, last: Instant::now(), took: started.elapsed(), held }
}

/// Reads until the connection ends.
async fn drain(mut ws: Socket) {
    while let Some(Ok(_)) = ws.next().await {}
}

/// Waits (up to a minute) until the cluster's presence holds at most `rows` connections.
async fn presence_down_to(pool: &sqlx::PgPool, rows: i64) -> anyhow::Result<()> {
    let since = Instant::now();
    loop {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM presence_connections").fetch_one(pool).await?;
        if n <= rows {
            return Ok(());
        }
        anyhow::ensure!(since.elapsed() < PATIENCE, "{n} connections still present");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Figure 1: viewers of one stream.
pub(super) struct Watched {
    connections: usize,
    users: usize,
    welcome: Opened,
    joined: Opened,
    converged: Option<Duration>,
    behind: usize,
    /// Viewer connections the server closed before the clients left.
    closed: usize,
    setup: Duration,
    emptied: Option<Duration>,
}

pub(super) async fn watching(
    http: &reqwest::Client,
    base: &str,
    addr: &str,
    pool: &sqlx::PgPool,
    owner: &Owner,
    connections: usize,
) -> anyhow::Result<Watched> {
    let setup = Instant::now();
    let users = connections.div_ceil(TABS).max(1);
    let experience = post(
        http,
        format!("{base}/api/v1/spaces/{}/experiences", owner.space),
        Some(&owner.token),
        json!({"name": "Launch week", "experience_type": "live_stream", "price_cents": 0}),
    )
    .await?;
    let experience = text(&experience["data"]["id"]);
    let tokens = viewers(http, base, owner, &experience, users).await?;
    // The host stays connected, so the stream is not ended as abandoned while it runs.
    let cable = format!("ws://{addr}/api/v1/cable");
    let (mut host, _) = tokio_tungstenite::connect_async(format!("{cable}?token={}", owner.token)).await?;
    until(&mut host, "welcome").await?;
    let host = tokio::spawn(drain(host));
    let stream = post(
        http,
        format!("{base}/api/v1/experiences/{experience}/streams"),
        Some(&owner.token),
        json!({"title": "Launch day", "starts_at": chrono::Utc::now() + chrono::Duration::minutes(1)}),
    )
    .await?;
    let stream = text(&stream["data"]["id"]);
    post(http, format!("{base}/api/v1/streams/{stream}/start"), Some(&owner.token), json!({})).await?;
    // Every grant readable before anyone subscribes (the channel reads them from the read model).
    let since = Instant::now();
    loop {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM access_grants WHERE experience_id = $1 AND status = 'active'",
        )
        .bind(experience.parse::<Uuid>()?)
        .fetch_one(pool)
        .await?;
        if n as usize >= users {
            break;
        }
        anyhow::ensure!(since.elapsed() < PATIENCE, "{n} of {users} grants in the read model");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let setup = setup.elapsed();
    // Each user's tabs one after another: distinct viewers grow until the very last joins, so
    // every connection but the last few needs a tick to hear the final count.
    let tokens: Vec<String> = (0..connections).map(|i| tokens[i * users / connections].clone()).collect();

    // The limit: the same connections through the same server, each only welcomed.
    let welcome = open_all(
        &cable,
        &tokens,
        |_, mut ws| async move { until(&mut ws, "welcome").await.map(|_| ws) },
        |_, ws| drain(ws),
    )
    .await;
    let mut held = welcome.held;
    held.shutdown().await;
    let welcome = Opened { held, ..welcome };
    presence_down_to(pool, 1).await?;

    let counts: Arc<Vec<AtomicI64>> = Arc::new((0..connections).map(|_| AtomicI64::new(-1)).collect());
    let ended = Arc::new(AtomicUsize::new(0));
    let subscribe = json!({"command": "subscribe", "channel": "stream", "id": stream}).to_string();
    let joined = {
        let (first, counts, ended, stream) = (counts.clone(), counts.clone(), ended.clone(), stream.clone());
        open_all(
            &cable,
            &tokens,
            move |i, mut ws| {
                let (subscribe, counts) = (subscribe.clone(), first.clone());
                async move {
                    ws.send(Message::Text(subscribe.into())).await?;
                    until(&mut ws, "subscribed").await?;
                    let update = until(&mut ws, "viewer_update").await?;
                    counts[i].store(update["count"].as_i64().unwrap_or(-1), Ordering::Relaxed);
                    Ok(ws)
                }
            },
            move |i, mut ws| {
                let (counts, ended, stream) = (counts.clone(), ended.clone(), stream.clone());
                async move {
                    while let Some(Ok(msg)) = ws.next().await {
                        let Message::Text(text) = msg else { continue };
                        let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                        if frame["type"] == "viewer_update" && frame["stream_id"] == stream.as_str() {
                            counts[i].store(frame["count"].as_i64().unwrap_or(-1), Ordering::Relaxed);
                        }
                    }
                    ended.fetch_add(1, Ordering::Relaxed);
                }
            },
        )
        .await
    };
    let expected = users as i64;
    let converged = loop {
        let behind = counts.iter().filter(|c| c.load(Ordering::Relaxed) != expected).count();
        if behind == 0 {
            break Some(joined.last.elapsed());
        }
        if joined.last.elapsed() > PATIENCE {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let behind = counts.iter().filter(|c| c.load(Ordering::Relaxed) != expected).count();
    let closed = ended.load(Ordering::Relaxed);
    // Everyone leaves at once: how long until no viewer row is left.
    let mut held = joined.held;
    let leaving = Instant::now();
    held.shutdown().await;
    let emptied = loop {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM stream_viewers").fetch_one(pool).await?;
        if n == 0 {
            break Some(leaving.elapsed());
        }
        if leaving.elapsed() > PATIENCE {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    host.abort();
    let joined = Opened { held, ..joined };
    Ok(Watched { connections, users, welcome, joined, converged, behind, closed, setup, emptied })
}

impl Watched {
    pub(super) fn print(&self) {
        let (j, w) = (&self.joined.latencies, &self.welcome.latencies);
        let tick = parley_api::live::viewers::TICK.as_secs_f64() * 1000.0;
        println!();
        println!(
            "creator: {} WebSocket connections on one live stream ({} users with a grant, {TABS} connections each, \
             each user's one after another), {OPENING} opening at once; setup (users, grants, stream) {:.1} s",
            self.connections,
            self.users,
            self.setup.as_secs_f64()
        );
        println!("  {:<58} {:>10} {:>10} {:>7}", "(ms)", "parley", "limit", "ratio");
        let line = |what: &str, ours: f64, limit: f64| {
            println!("  {what:<58} {ours:>10.1} {limit:>10.1} {:>7.2}", ours / limit);
        };
        line(
            "join p50: connect → subscribed → first viewer_update",
            percentile(j, 0.50),
            percentile(w, 0.50),
        );
        line("join p99 (limit: connect → welcome, same server)", percentile(j, 0.99), percentile(w, 0.99));
        match self.converged {
            Some(c) => {
                line("convergence after the last join (limit: the tick)", c.as_secs_f64() * 1000.0, tick)
            }
            None => println!(
                "  convergence: {} connections still without the count after {} s",
                self.behind,
                PATIENCE.as_secs()
            ),
        }
        println!(
            "  opened/s: joins {:.0}/s, welcomes {:.0}/s; failures: joins {}, welcomes {}; \
             viewers closed by the server {}",
            self.connections as f64 / self.joined.took.as_secs_f64(),
            self.connections as f64 / self.welcome.took.as_secs_f64(),
            self.joined.failures,
            self.welcome.failures,
            self.closed
        );
        match self.emptied {
            Some(e) => println!(
                "  all {} viewers leave at once: stream_viewers empty after {:.2} s",
                self.connections,
                e.as_secs_f64()
            ),
            None => println!("  all viewers left: stream_viewers not empty after {} s", PATIENCE.as_secs()),
        }
    }
}
