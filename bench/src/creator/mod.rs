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

use std::time::Duration;

use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;

use crate::presence::{ChildServer, Served};
use crate::Scratch;

mod listing;
mod viewers;

use listing::listing;
use viewers::watching;
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
