//! The dashboard in headless Chromium (`tests/js/dashboard_check.mjs`, which `scripts/test`
//! installs) under a rising event rate: messages posted over HTTP (appended directly above
//! what HTTP posting reaches here) at each rate for a few
//! seconds while the page follows the account channel; how far behind the page falls (events
//! posted but not yet shown, in seconds of the rate), next to a plain WebSocket client
//! following the same channel in this process.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use parley_api::http::Server;
use parley_api::{App, Config};
use parley_commands::password::PasswordHasher;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_tungstenite::tungstenite::Message;

use crate::signals::post;
use crate::Scratch;

const RATES: [u64; 9] = [50, 100, 200, 400, 800, 1600, 3200, 6400, 12800];
/// Above this rate the events are appended to the log directly, 100 at a time (this machine's
/// HTTP posting tops out below it), still reaching the page through the cable.
const HTTP_UP_TO: u64 = 800;
const BATCH: u64 = 100;
const PHASE: Duration = Duration::from_secs(5);
const POSTERS: usize = 16;

/// The page, driven over the script's standard streams.
struct Page {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Page {
    async fn start(base: &str) -> anyhow::Result<Self> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/js");
        anyhow::ensure!(
            std::path::Path::new(dir).join("node_modules/puppeteer-core").exists(),
            "tests/js/node_modules is missing: run scripts/test once (or npm ci --prefix tests/js)"
        );
        let mut child = Command::new("node")
            .arg(format!("{dir}/dashboard_check.mjs"))
            .arg(base)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        let lines = BufReader::new(child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?).lines();
        let mut page = Self { _child: child, stdin, lines };
        page.answer().await?;
        Ok(page)
    }

    async fn answer(&mut self) -> anyhow::Result<Value> {
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await??
            .ok_or_else(|| anyhow::anyhow!("the browser script ended"))?;
        let answer: Value = serde_json::from_str(&line)?;
        anyhow::ensure!(answer["ok"] == true, "{answer}");
        Ok(answer)
    }

    async fn run(&mut self, command: Value) -> anyhow::Result<Value> {
        self.stdin.write_all(format!("{command}\n").as_bytes()).await?;
        self.answer().await
    }

    /// How many events the page has shown.
    async fn seen(&mut self) -> anyhow::Result<u64> {
        Ok(self.run(json!({"op": "eval", "js": "state.seen"})).await?["value"].as_u64().unwrap_or(0))
    }
}

/// One rate's outcome for a follower: the most events it was behind, and how long after the
/// last post it had them all.
struct Kept {
    max_behind: u64,
    caught_up: Duration,
}

pub async fn run(server: &PgConnectOptions) -> anyhow::Result<()> {
    let scratch = Scratch::new(server, "dashboard").await?;
    let mut config = Config::new(scratch.options.to_url_lossy().to_string());
    config.pool_size = 32;
    let app = App::connect_with(&config, false, PasswordHasher::fast_insecure()).await?;
    let store = app.store.clone();
    let srv = Server::start(app, &crate::serving(config)).await?;
    let base = format!("http://{}", srv.addr);
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let owner = post(
        &http,
        format!("{base}/api/v1/auth/register"),
        None,
        json!({"name": "Owner", "email": "owner@example.com", "password": "correct horse battery"}),
    )
    .await?;
    let token = owner["data"]["access_token"].as_str().unwrap_or_default().to_owned();
    let group = post(
        &http,
        format!("{base}/api/v1/conversations"),
        Some(&token),
        json!({"kind": "group", "title": "load", "member_ids": []}),
    )
    .await?;
    let conversation = group["data"]["id"].as_str().unwrap_or_default().to_owned();
    let messages = format!("{base}/api/v1/conversations/{conversation}/messages");
    let account: uuid::Uuid = owner["data"]["account"]["id"].as_str().unwrap_or_default().parse()?;
    let author: uuid::Uuid = owner["data"]["user"]["id"].as_str().unwrap_or_default().parse()?;

    let mut page = Page::start(&base).await?;
    page.run(json!({"op": "open", "path": format!("/dashboard?token={token}")})).await?;
    page.run(json!({"op": "subscribed"})).await?;
    // The plain client: counts the account channel's events.
    let plain_seen = Arc::new(AtomicU64::new(0));
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "{}/api/v1/cable?token={token}",
        base.replace("http", "ws")
    ))
    .await?;
    ws.send(Message::Text(json!({"command": "subscribe", "channel": "account"}).to_string().into())).await?;
    let counter = plain_seen.clone();
    let plain = tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(text) = msg {
                if text.as_str().contains("\"type\":\"event\"") {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    let (page_base, plain_base) = (page.seen().await?, plain_seen.load(Ordering::Relaxed));

    println!();
    println!(
        "dashboard in headless Chromium: messages at each rate for {} s (over HTTP up to {HTTP_UP_TO}/s, \
         appended to the log {BATCH} at a time above)",
        PHASE.as_secs()
    );
    println!(
        "  {:>6} {:>9} | {:>22} | {:>22}",
        "rate", "posted/s", "page: behind / caught up", "plain client: same"
    );
    let mut total = 0u64;
    let mut kept_up_to = 0;
    for rate in RATES {
        let posted = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut posters = Vec::new();
        if rate > HTTP_UP_TO {
            let (store, posted) = (store.clone(), posted.clone());
            let stream = parley_eventstore::StreamKey::new("Conversation", format!("load-{rate}"));
            posters.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs_f64(BATCH as f64 / rate as f64));
                let mut version = 0;
                while started.elapsed() < PHASE {
                    tick.tick().await;
                    let events = (0..BATCH)
                        .map(|_| {
                            parley_eventstore::NewEvent::new(
                                "MessagePosted",
                                1,
                                json!({"message_id": uuid::Uuid::now_v7(), "conversation_id": uuid::Uuid::nil(),
                                       "author_id": author, "body": "load"}),
                            )
                        })
                        .collect();
                    let append = parley_eventstore::StreamAppend {
                        account_id: account,
                        stream: stream.clone(),
                        expected_version: version,
                        events,
                        metadata: parley_eventstore::Metadata::system(),
                    };
                    if store.append(&append).await.is_ok() {
                        version += BATCH as i64;
                        posted.fetch_add(BATCH, Ordering::Relaxed);
                    }
                }
            }));
        }
        for i in 0..if rate > HTTP_UP_TO { 0 } else { POSTERS } {
            let (http, url, token, posted) = (http.clone(), messages.clone(), token.clone(), posted.clone());
            posters.push(tokio::spawn(async move {
                let every = Duration::from_secs_f64(POSTERS as f64 / rate as f64);
                let mut tick = tokio::time::interval_at(
                    tokio::time::Instant::now() + every * i as u32 / POSTERS as u32,
                    every,
                );
                while started.elapsed() < PHASE {
                    tick.tick().await;
                    let ok = http.post(&url).bearer_auth(&token).json(&json!({"body": "load"})).send().await;
                    if ok.is_ok_and(|r| r.status().is_success()) {
                        posted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        let (mut page_behind, mut plain_behind) = (0u64, 0u64);
        while started.elapsed() < PHASE {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let sent = total + posted.load(Ordering::Relaxed);
            page_behind = page_behind.max(sent.saturating_sub(page.seen().await? - page_base));
            plain_behind =
                plain_behind.max(sent.saturating_sub(plain_seen.load(Ordering::Relaxed) - plain_base));
        }
        for p in posters {
            p.await?;
        }
        let phase_posted = posted.load(Ordering::Relaxed);
        total += phase_posted;
        let ended = Instant::now();
        let (mut page_done, mut plain_done) = (None, None);
        while (page_done.is_none() || plain_done.is_none()) && ended.elapsed() < Duration::from_secs(30) {
            if page_done.is_none() && page.seen().await? - page_base >= total {
                page_done = Some(ended.elapsed());
            }
            if plain_done.is_none() && plain_seen.load(Ordering::Relaxed) - plain_base >= total {
                plain_done = Some(ended.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let achieved = phase_posted as f64 / PHASE.as_secs_f64();
        let show = |k: Kept| {
            format!(
                "{:>7.2} s / {:>8.2} s",
                k.max_behind as f64 / achieved.max(1.0),
                k.caught_up.as_secs_f64()
            )
        };
        let page_kept =
            Kept { max_behind: page_behind, caught_up: page_done.unwrap_or(Duration::from_secs(30)) };
        let plain_kept =
            Kept { max_behind: plain_behind, caught_up: plain_done.unwrap_or(Duration::from_secs(30)) };
        let keeps_up = page_kept.caught_up < Duration::from_secs(1);
        if keeps_up {
            kept_up_to = kept_up_to.max(achieved as u64);
        }
        println!("  {rate:>6} {achieved:>9.0} | {} | {}", show(page_kept), show(plain_kept));
        if !keeps_up {
            println!("  the page fell behind at {achieved:.0} events/s; it kept up to {kept_up_to} events/s");
            break;
        }
    }
    if kept_up_to > 0 {
        println!("  kept up (everything shown within 1 s of the last post) to {kept_up_to} events/s");
    }
    plain.abort();
    srv.stop().await;
    scratch.drop_db().await
}
