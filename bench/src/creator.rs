//! The creator platform, on one server in a child process (10,000 sockets each side):
//!
//! - Viewers of one live stream: `--creator-viewers` WebSocket connections (users of the account
//!   with a live grant, ten connections each) subscribe to the stream's channel, `OPENING` at a
//!   time. Each join is timed from the connect to the first `viewer_update` (p50/p99), next to a
//!   bare connect → `welcome` through the same server with the same concurrency; convergence is
//!   how long after the last subscription every connection's last `viewer_update` carries the
//!   number of distinct viewers, next to the count's tick (counts are sent at most once a tick).
//! - Listing a space of `--creator-experiences` experiences:
//!   `GET /spaces/{id}/experiences?page=P&per_page=20` over random pages with `CLIENTS` clients as
//!   the owner, next to `GET /health` with as many clients, and next to the page's `SELECT` on
//!   direct connections; and the space's `experiences_count`, kept by the read model.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::http::{percentile, timed_load};
use crate::presence::{ChildServer, Served};
use crate::signals::post;
use crate::Scratch;

/// Connections of each viewer (tabs).
const TABS: usize = 10;
/// Connections opened at once.
const OPENING: usize = 64;
/// Clients of the listing and of `/health`.
const CLIENTS: usize = 16;
const PER_PAGE: usize = 20;
/// Rounds of the listing's three measurements, alternated so each sees the same machine.
const ROUNDS: usize = 3;
/// The longest a join or the convergence may take before it counts as failed.
const PATIENCE: Duration = Duration::from_secs(60);

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A GET's JSON with a bearer token (and extra headers), or why not.
async fn get(
    http: &reqwest::Client,
    url: String,
    token: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Value> {
    let mut req = http.get(url).bearer_auth(token);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let r = req.send().await?;
    anyhow::ensure!(r.status().is_success(), "{}: {}", r.status(), r.text().await?);
    Ok(r.json().await?)
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// The account: its owner's token and primary space.
struct Owner {
    token: String,
    space: String,
}

async fn owner(http: &reqwest::Client, base: &str) -> anyhow::Result<Owner> {
    let (token, position) = crate::http::register(http, base).await?;
    let spaces =
        get(http, format!("{base}/api/v1/spaces"), &token, &[("X-Min-Position", position.as_str())]).await?;
    let space = text(&spaces["data"][0]["id"]);
    anyhow::ensure!(!space.is_empty(), "no primary space: {spaces}");
    Ok(Owner { token, space })
}

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

pub async fn run(
    server: &PgConnectOptions,
    viewer_connections: usize,
    experiences: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let scratch = Scratch::new(server, "creator").await?;
    let url = scratch.options.to_url_lossy().to_string();
    let parley = Served::spawn(ChildServer::Parley, &url).await?;
    let base = format!("http://{}", parley.addr);
    let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build()?;
    let pool = parley_eventstore::db::pool(scratch.options.clone(), CLIENTS as u32 + 2).await?;
    let owner = owner(&http, &base).await?;

    let watched = watching(&http, &base, &parley.addr, &pool, &owner, viewer_connections).await;
    let listed = listing(&http, &base, &pool, &owner, experiences, seconds).await;
    pool.close().await;
    parley.stop().await;
    let (watched, listed) = (watched?, listed?);
    watched.print();
    listed.print();
    scratch.drop_db().await
}

/// Figure 1: viewers of one stream.
struct Watched {
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

async fn watching(
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
    fn print(&self) {
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

/// Figure 2: a space of many experiences, listed.
struct Listed {
    experiences: usize,
    created_per_s: f64,
    /// The space's `experiences_count` once the read model caught up, and how long after the
    /// last creation.
    kept: i64,
    caught_up: Duration,
    list: Vec<Duration>,
    health: Vec<Duration>,
    raw: Vec<Duration>,
    raw_single: Vec<Duration>,
    raw_counted: Vec<Duration>,
    raw_endpoint: Vec<Duration>,
    rates: [f64; 3],
    failures: u64,
}

/// A page from 1 to `pages`, spread evenly by `(client, n)`.
fn page(client: usize, n: usize, pages: usize) -> usize {
    let mut x = ((client as u64) << 32 | n as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % pages as u64) as usize + 1
}

const PAGE_SQL: &str =
    "SELECT * FROM experiences WHERE space_id = $1 ORDER BY created_at, id LIMIT $2 OFFSET $3";
const COUNT_SQL: &str = "SELECT count(*) FROM experiences WHERE space_id = $1";
/// The endpoint's own two statements (`creator::query::experiences`), as a manager runs them:
/// the space's kept count, and an index range of its experiences.
const KEPT_COUNT_SQL: &str = "SELECT experiences_count FROM spaces WHERE id = $1 AND account_id = $2";
const ENDPOINT_PAGE_SQL: &str = "SELECT * FROM experiences WHERE space_id = $1 AND account_id = $2 \
     ORDER BY created_at, id LIMIT $3 OFFSET $4";

async fn listing(
    http: &reqwest::Client,
    base: &str,
    pool: &sqlx::PgPool,
    owner: &Owner,
    experiences: usize,
    seconds: u64,
) -> anyhow::Result<Listed> {
    let space = post(
        http,
        format!("{base}/api/v1/spaces"),
        Some(&owner.token),
        json!({"name": "Catalog", "slug": "catalog"}),
    )
    .await?;
    let space = text(&space["data"]["id"]);
    let started = Instant::now();
    let mut created = futures::stream::iter(0..experiences)
        .map(|i| {
            let (http, token, url) =
                (http.clone(), owner.token.clone(), format!("{base}/api/v1/spaces/{space}/experiences"));
            async move {
                post(
                    &http,
                    url,
                    Some(&token),
                    json!({"name": format!("Course {i}"), "experience_type": "course", "price_cents": 0}),
                )
                .await
            }
        })
        .buffer_unordered(CLIENTS);
    while let Some(done) = created.next().await {
        done?;
    }
    let last = Instant::now();
    let created_per_s = experiences as f64 / started.elapsed().as_secs_f64();
    let kept = loop {
        let shown = get(http, format!("{base}/api/v1/spaces/{space}"), &owner.token, &[]).await?;
        let kept = shown["data"]["experiences_count"].as_i64().unwrap_or(-1);
        if kept >= experiences as i64 || last.elapsed() > PATIENCE {
            break kept;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let caught_up = last.elapsed();
    let space_id: Uuid = space.parse()?;
    let pages = experiences.div_ceil(PER_PAGE).max(1);

    let (mut list, mut health, mut raw, mut raw_single, mut raw_counted) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut rates, mut failures) = ([0.0; 3], 0);
    let mut direct = PgConnection::connect_with(&*pool.connect_options()).await?;
    let (account_id,): (Uuid,) = sqlx::query_as("SELECT account_id FROM spaces WHERE id = $1")
        .bind(space_id)
        .fetch_one(&mut direct)
        .await?;
    let mut raw_endpoint = Vec::new();
    for _ in 0..ROUNDS {
        let (http2, base2, token) = (http.clone(), base.to_owned(), owner.token.clone());
        let url = format!("{base2}/api/v1/spaces/{space}/experiences");
        let (rate, latencies, failed) = timed_load(CLIENTS, seconds, move |client, n| {
            let (http, url, token) = (http2.clone(), url.clone(), token.clone());
            async move {
                let query = [("page", page(client, n, pages)), ("per_page", PER_PAGE)];
                match http.get(url).query(&query).bearer_auth(token).send().await {
                    Ok(r) if r.status() == 200 => true,
                    Ok(r) => {
                        eprintln!("  list: {} {}", r.status(), r.text().await.unwrap_or_default());
                        false
                    }
                    Err(e) => {
                        eprintln!("  list: {e}");
                        false
                    }
                }
            }
        })
        .await?;
        list.extend(latencies);
        rates[0] += rate / ROUNDS as f64;
        failures += failed;

        let (http2, url) = (http.clone(), format!("{base}/health"));
        let (rate, latencies, failed) = timed_load(CLIENTS, seconds, move |_, _| {
            let (http, url) = (http2.clone(), url.clone());
            async move {
                match http.get(url).send().await {
                    Ok(r) if r.status() == 200 => true,
                    Ok(r) => {
                        eprintln!("  health: {}", r.status());
                        false
                    }
                    Err(e) => {
                        eprintln!("  health: {e}");
                        false
                    }
                }
            }
        })
        .await?;
        health.extend(latencies);
        rates[1] += rate / ROUNDS as f64;
        failures += failed;

        let pool2 = pool.clone();
        let (rate, latencies, failed) = timed_load(CLIENTS, seconds, move |client, n| {
            let pool = pool2.clone();
            async move {
                let offset = ((page(client, n, pages) - 1) * PER_PAGE) as i64;
                sqlx::query(PAGE_SQL)
                    .bind(space_id)
                    .bind(PER_PAGE as i64)
                    .bind(offset)
                    .fetch_all(&pool)
                    .await
                    .is_ok_and(|rows| !rows.is_empty())
            }
        })
        .await?;
        raw.extend(latencies);
        rates[2] += rate / ROUNDS as f64;
        failures += failed;

        // One direct connection: the page alone, with the count the endpoint also takes, and
        // the endpoint's own two statements.
        for kind in 0..3 {
            let until = Instant::now() + Duration::from_secs(seconds.div_ceil(2));
            let mut n = 0;
            while Instant::now() < until {
                let offset = ((page(usize::MAX, n, pages) - 1) * PER_PAGE) as i64;
                let t = Instant::now();
                if kind == 2 {
                    sqlx::query(KEPT_COUNT_SQL)
                        .bind(space_id)
                        .bind(account_id)
                        .fetch_one(&mut direct)
                        .await?;
                    sqlx::query(ENDPOINT_PAGE_SQL)
                        .bind(space_id)
                        .bind(account_id)
                        .bind(PER_PAGE as i64)
                        .bind(offset)
                        .fetch_all(&mut direct)
                        .await?;
                } else {
                    if kind == 1 {
                        sqlx::query(COUNT_SQL).bind(space_id).fetch_one(&mut direct).await?;
                    }
                    sqlx::query(PAGE_SQL)
                        .bind(space_id)
                        .bind(PER_PAGE as i64)
                        .bind(offset)
                        .fetch_all(&mut direct)
                        .await?;
                }
                [&mut raw_single, &mut raw_counted, &mut raw_endpoint][kind].push(t.elapsed());
                n += 1;
            }
        }
    }
    direct.close().await?;
    for v in [&mut list, &mut health, &mut raw, &mut raw_single, &mut raw_counted, &mut raw_endpoint] {
        v.sort();
    }
    Ok(Listed {
        experiences,
        created_per_s,
        kept,
        caught_up,
        list,
        health,
        raw,
        raw_single,
        raw_counted,
        raw_endpoint,
        rates,
        failures,
    })
}

impl Listed {
    fn print(&self) {
        println!();
        println!(
            "creator: GET /spaces/{{id}}/experiences?page=P&per_page={PER_PAGE} over random pages of a space of {} \
             experiences, {CLIENTS} clients as the owner, {ROUNDS} alternated rounds",
            self.experiences
        );
        println!(
            "  space's experiences_count (kept by the read model) {} (expected {}); read model caught up {:.2} s \
             after the last creation; created through HTTP at {:.0}/s ({CLIENTS} clients)",
            self.kept,
            self.experiences,
            self.caught_up.as_secs_f64(),
            self.created_per_s
        );
        println!("  {:<52} {:>9} {:>9} {:>9}", "(ms)", "p50", "p99", "req/s");
        let row = |what: &str, v: &[Duration], rate: Option<f64>| {
            let rate = rate.map(|r| format!("{r:.0}")).unwrap_or_default();
            println!("  {what:<52} {:>9.2} {:>9.2} {rate:>9}", percentile(v, 0.50), percentile(v, 0.99));
        };
        row("list a page (HTTP)", &self.list, Some(self.rates[0]));
        row("GET /health (HTTP, same clients)", &self.health, Some(self.rates[1]));
        row(&format!("the page's SELECT, {CLIENTS} direct connections"), &self.raw, Some(self.rates[2]));
        row("the page's SELECT, one direct connection", &self.raw_single, None);
        row("count(*) + the page's SELECT, one connection", &self.raw_counted, None);
        row("the endpoint's own count + page statements, one conn", &self.raw_endpoint, None);
        let ratio = |a: &[Duration], b: &[Duration], p: f64| percentile(a, p) / percentile(b, p);
        println!(
            "  ratios p50/p99: list / health {:.2} / {:.2}; list / SELECT ({CLIENTS} conns) {:.2} / {:.2}; \
             list / SELECT (one conn) {:.2} / {:.2}; failures {}",
            ratio(&self.list, &self.health, 0.5),
            ratio(&self.list, &self.health, 0.99),
            ratio(&self.list, &self.raw, 0.5),
            ratio(&self.list, &self.raw, 0.99),
            ratio(&self.list, &self.raw_single, 0.5),
            ratio(&self.list, &self.raw_single, 0.99),
            self.failures
        );
    }
}
