//! Chat at scale, through the real server: posting into a conversation that already holds
//! 100,000 messages next to one that holds 100 (same run), and live fan-out to 1,000 WebSocket
//! clients while messages are posted at a steady rate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;
use tokio_tungstenite::tungstenite::Message;

use crate::http::{percentile, register};
use crate::presence::{ChildServer, Served};
use crate::Scratch;

/// Sequential posts timed at each size.
const SAMPLES: usize = 300;
const FILL_CLIENTS: usize = 32;

struct Bench {
    /// The server, in a child process: its memory and CPU are its own, and 10,000 sockets on
    /// each side fit each process's file limit.
    srv: Served,
    base: String,
    http: reqwest::Client,
    token: String,
}

impl Bench {
    async fn start(scratch: &Scratch) -> anyhow::Result<Self> {
        let srv = Served::spawn(ChildServer::Parley, scratch.options.to_url_lossy().as_ref()).await?;
        let base = format!("http://{}", srv.addr);
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
        let (token, _) = register(&http, &base).await?;
        Ok(Self { srv, base, http, token })
    }

    async fn group(&self) -> anyhow::Result<String> {
        let c: Value = self
            .http
            .post(format!("{}/api/v1/conversations", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"kind": "group", "title": "bench", "member_ids": []}))
            .send()
            .await?
            .json()
            .await?;
        c["data"]["id"].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no conversation: {c}"))
    }

    /// Posts one message; its id once the server answered.
    async fn post(&self, conversation: &str, body: &str) -> anyhow::Result<String> {
        let r = self
            .http
            .post(format!("{}/api/v1/conversations/{conversation}/messages", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"body": body}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "post failed: {}", r.status());
        let v: Value = r.json().await?;
        Ok(v["data"]["id"].as_str().unwrap_or_default().to_owned())
    }

    /// Posts until the conversation holds `n` messages, from many clients at once.
    async fn fill(&self, conversation: &str, from: usize, n: usize) -> anyhow::Result<()> {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(from));
        let clients = (0..FILL_CLIENTS).map(|_| {
            let next = next.clone();
            async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                    self.post(conversation, "filler").await?;
                }
                anyhow::Ok(())
            }
        });
        for r in futures::future::join_all(clients).await {
            r?;
        }
        Ok(())
    }

    /// p50 and p99 (ms) of `SAMPLES` posts into each conversation, one after another and
    /// alternating between them, so both see the same moments of the machine.
    async fn timed_posts(&self, a: &str, b: &str) -> anyhow::Result<[(f64, f64); 2]> {
        let mut took = [Vec::with_capacity(SAMPLES), Vec::with_capacity(SAMPLES)];
        for _ in 0..SAMPLES {
            for (i, conversation) in [a, b].into_iter().enumerate() {
                let started = Instant::now();
                self.post(conversation, "timed").await?;
                took[i].push(started.elapsed());
            }
        }
        Ok(took.map(|mut t| {
            t.sort();
            (percentile(&t, 0.5), percentile(&t, 0.99))
        }))
    }
}

/// Posting message number `messages` of one conversation next to message number 100 of another,
/// same server, same moments.
pub async fn growth(server: &PgConnectOptions, messages: usize) -> anyhow::Result<()> {
    let scratch = Scratch::new(server, "chat_growth").await?;
    let b = Bench::start(&scratch).await?;
    let (large, small) = (b.group().await?, b.group().await?);
    b.fill(&small, 0, 100).await?;
    let started = Instant::now();
    b.fill(&large, 0, messages).await?;
    let fill_rate = messages as f64 / started.elapsed().as_secs_f64();
    let [(large_p50, large_p99), (small_p50, small_p99)] = b.timed_posts(&large, &small).await?;
    println!();
    println!("chat growth: {SAMPLES} posts one after another into each of two conversations, alternating");
    println!("  holding ~100 messages:     p50 {small_p50:>6.2} ms  p99 {small_p99:>6.2} ms");
    println!("  holding ~{messages} messages: p50 {large_p50:>6.2} ms  p99 {large_p99:>6.2} ms");
    println!(
        "  = {:.2}x the p50 at ~100 (target <= 1.3x); the large one filled at {fill_rate:.0} posts/s",
        large_p50 / small_p50
    );
    b.srv.stop().await;
    scratch.drop_db().await
}

/// The `message_id` of a message event's frame.
fn message_id(frame: &str, dialect: Dialect) -> Option<&str> {
    let key = match dialect {
        // Parley's event frame: `"data":{..."message_id":"<id>"...}`.
        Dialect::Parley => "\"message_id\":\"",
        // Action Cable's `new_message`: the message's own `"id":"<id>"` (the identifier's keys are
        // escaped inside its string, and the message's other ids end in `_id`).
        Dialect::ActionCable => "\"id\":\"",
    };
    let start = frame.find(key)? + key.len();
    frame.get(start..start + 36)
}

/// Which dialect the fan-out's clients speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Parley,
    ActionCable,
}

/// A client of `dialect` following `conversation`, once subscribed.
async fn follower(
    ws_base: &str,
    token: &str,
    conversation: &str,
    dialect: Dialect,
) -> anyhow::Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("{ws_base}/api/v1/cable?token={token}").into_client_request()?;
    let (subscribe, confirmed) = match dialect {
        Dialect::Parley => {
            (json!({"command": "subscribe", "channel": "conversation", "id": conversation}), "\"subscribed\"")
        }
        Dialect::ActionCable => {
            request.headers_mut().insert("sec-websocket-protocol", "actioncable-v1-json".parse()?);
            let identifier =
                json!({"channel": "ConversationChannel", "conversation_id": conversation}).to_string();
            (json!({"command": "subscribe", "identifier": identifier}), "\"confirm_subscription\"")
        }
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    ws.send(Message::Text(subscribe.to_string().into())).await?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(text) = msg? {
            if text.as_str().contains(confirmed) {
                return Ok(ws);
            }
        }
    }
    anyhow::bail!("closed before it was subscribed")
}

/// This process's resident memory, in MiB.
/// Delivery latencies in 0.1 ms buckets up to 1 s (and one bucket beyond): constant memory
/// however long the run.
struct Histogram {
    buckets: Vec<u64>,
    /// The same since the last window was taken.
    window: Vec<u64>,
}

impl Histogram {
    fn new() -> Self {
        Self { buckets: vec![0; 10_001], window: vec![0; 10_001] }
    }

    fn add(&mut self, d: Duration) {
        let i = ((d.as_secs_f64() * 10_000.0) as usize).min(10_000);
        self.buckets[i] += 1;
        self.window[i] += 1;
    }

    /// p50 and p99 of the window since the last call, which starts a new one.
    fn take_window(&mut self) -> (f64, f64) {
        let window =
            Histogram { buckets: std::mem::replace(&mut self.window, vec![0; 10_001]), window: vec![] };
        (window.percentile(0.5), window.percentile(0.99))
    }

    fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    fn percentile(&self, p: f64) -> f64 {
        let target = (self.count() as f64 * p).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target.max(1) {
                return i as f64 / 10.0;
            }
        }
        f64::INFINITY
    }
}

/// When each recent message's POST was answered, and how many of its subscribers got it.
#[derive(Default)]
struct InFlight {
    answered: HashMap<String, (Instant, usize)>,
    /// Deliveries that beat their POST's answer (latency 0 from the poster's point of view).
    early: HashMap<String, usize>,
}

/// `clients` WebSocket clients over `conversations` conversations; messages posted at `rate`/s
/// for `seconds`; latency from each POST's answer to each subscriber's receipt.
pub async fn fanout(
    server: &PgConnectOptions,
    clients: usize,
    conversations: usize,
    rate: u64,
    seconds: u64,
    dialect: Dialect,
) -> anyhow::Result<()> {
    let scratch = Scratch::new(server, "chat_fanout").await?;
    let b = Arc::new(Bench::start(&scratch).await?);
    let mut ids = Vec::with_capacity(conversations);
    for _ in 0..conversations {
        ids.push(b.group().await?);
    }
    let per_conversation = clients / conversations;
    let hist = Arc::new(Mutex::new(Histogram::new()));
    let flight = Arc::new(Mutex::new(InFlight::default()));
    let ws_base = b.base.replace("http://", "ws://");
    let mut readers = Vec::with_capacity(clients);
    let server_before = b.srv.rss_mib()?;
    for i in 0..clients {
        // Posting starts once every client is subscribed.
        let mut ws = follower(&ws_base, &b.token, &ids[i % conversations], dialect).await?;
        let (hist, flight) = (hist.clone(), flight.clone());
        readers.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(text) = msg else { continue };
                let received = Instant::now();
                // The load generator shares the cores with the server: find the id, parse nothing.
                let Some(id) = message_id(text.as_str(), dialect) else { continue };
                let Ok(mut f) = flight.lock() else { return };
                match f.answered.get_mut(id) {
                    Some((at, got)) => {
                        let at = *at;
                        *got += 1;
                        if *got >= per_conversation {
                            f.answered.remove(id);
                        }
                        drop(f);
                        if let Ok(mut h) = hist.lock() {
                            h.add(received.saturating_duration_since(at));
                        }
                    }
                    None => *f.early.entry(id.to_owned()).or_default() += 1,
                }
            }
        }));
    }
    let server_held = b.srv.rss_mib()?;
    let mut memory = vec![(0u64, server_held)];
    let mut windows = Vec::new();
    let mut post_windows = Vec::new();
    let post_hist = Arc::new(Mutex::new(Histogram::new()));
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut posted = 0u64;
    let mut posts = futures::stream::FuturesUnordered::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let conversation = ids[posted as usize % conversations].clone();
        let (poster, flight, hist_of_post, timed) =
            (b.clone(), flight.clone(), hist.clone(), post_hist.clone());
        posts.push(tokio::spawn(async move {
            let sent = Instant::now();
            let id = poster.post(&conversation, "fan-out").await?;
            let answered = Instant::now();
            if let Ok(mut h) = timed.lock() {
                h.add(answered - sent);
            }
            let Ok(mut f) = flight.lock() else { return anyhow::Ok(()) };
            let early = f.early.remove(&id).unwrap_or(0);
            if early < per_conversation {
                f.answered.insert(id, (answered, early));
            }
            drop(f);
            if let Ok(mut h) = hist_of_post.lock() {
                (0..early).for_each(|_| h.add(Duration::ZERO));
            }
            anyhow::Ok(())
        }));
        posted += 1;
        while let Some(done) = futures::FutureExt::now_or_never(posts.next()).flatten() {
            done??;
        }
        let elapsed = started.elapsed().as_secs();
        if elapsed >= memory.last().map_or(0, |m| m.0) + 30 {
            memory.push((elapsed, b.srv.rss_mib()?));
            if let Ok(mut h) = hist.lock() {
                windows.push(h.take_window());
            }
            if let Ok(mut h) = post_hist.lock() {
                post_windows.push(h.take_window());
            }
        }
    }
    while let Some(done) = posts.next().await {
        done??;
    }
    // The last deliveries land (or are counted missing after 5 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && flight.lock().is_ok_and(|f| !f.answered.is_empty()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    memory.push((started.elapsed().as_secs(), b.srv.rss_mib()?));
    let (missing, pending) = {
        let f = flight.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        (f.answered.values().map(|(_, got)| per_conversation - got).sum::<usize>(), f.early.len())
    };
    let (delivered, p50, p90, p99) = {
        let h = hist.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        (h.count(), h.percentile(0.5), h.percentile(0.9), h.percentile(0.99))
    };
    println!();
    println!(
        "chat fan-out ({dialect:?} dialect): {clients} WebSocket clients over {conversations} conversations, \
         {rate} posts/s for {seconds} s"
    );
    println!(
        "  posted {posted} ({:.0}/s), deliveries {delivered} of {} expected, {missing} missing, {pending} unmatched",
        posted as f64 / seconds as f64,
        posted * per_conversation as u64
    );
    println!(
        "  POST answered -> received by each subscriber: p50 {p50:.1} ms  p90 {p90:.1} ms  p99 {p99:.1} ms \
         (target p99 < 25 ms)"
    );
    let by_window: Vec<String> = windows.iter().map(|(p50, p99)| format!("{p50:.1}/{p99:.1}")).collect();
    println!("  p50/p99 ms of each 30 s: {}", by_window.join(", "));
    let by_window: Vec<String> = post_windows.iter().map(|(p50, p99)| format!("{p50:.1}/{p99:.1}")).collect();
    println!("  the POSTs themselves, p50/p99 ms of each 30 s: {}", by_window.join(", "));
    let samples: Vec<String> = memory.iter().map(|(s, m)| format!("{s}s {m:.0}")).collect();
    println!("  server memory, MiB: {}", samples.join(", "));
    println!(
        "  server memory per connection: {:.1} KiB ({server_before:.0} MiB before the clients, {server_held:.0} MiB holding them)",
        (server_held - server_before) * 1024.0 / clients.max(1) as f64
    );
    for r in readers {
        r.abort();
    }
    if let Ok(b) = Arc::try_unwrap(b) {
        b.srv.stop().await;
    }
    scratch.drop_db().await
}
