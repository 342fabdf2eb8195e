//! Posting messages through the real HTTP server (a child process, so that its CPU is its own),
//! next to the raw insert limit, with what each post cost the server and PostgreSQL in CPU.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_eventstore::db;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;

use crate::presence::{ChildServer, Served};
use crate::store::raw_inserts;
use crate::{cpu, Scratch};

const CLIENTS: usize = 32;
const CONVERSATIONS: usize = 100;
const ROUNDS: usize = 5;

/// Registers the benchmark's user: its access token and the registration's position.
pub async fn register(http: &reqwest::Client, base: &str) -> anyhow::Result<(String, String)> {
    let registered: Value = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"name": "Bench", "email": "bench@example.com", "password": "correct horse battery"}))
        .send()
        .await?
        .json()
        .await?;
    let token = registered["data"]["access_token"].as_str().unwrap_or_default().to_owned();
    let position = registered["meta"]["position"].as_str().unwrap_or("0").to_owned();
    Ok((token, position))
}

pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

pub async fn run(server: &PgConnectOptions, seconds: u64) -> anyhow::Result<()> {
    let scratch = Scratch::new(server, "http").await?;
    let raw_pool = db::pool(scratch.options.clone(), CLIENTS as u32 + 2).await?;

    let served = Served::spawn(ChildServer::Parley, scratch.options.to_url_lossy().as_ref()).await?;
    let base = format!("http://{}", served.addr);
    let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build()?;
    let (token, conversations) = rooms(&http, &base).await?;
    // Alternate the two, so that both see the same moments of a noisy machine; the ratio is
    // the median round's.
    let mut rounds = Vec::new();
    let mut all = Vec::new();
    let mut failed = 0;
    let (mut server_cpu, mut postgres_cpu, mut posts) = (0.0, 0.0, 0usize);
    let (mut transactions, mut log_reads) = (0u64, Reads::default());
    for _ in 0..ROUNDS {
        let raw = raw_inserts(raw_pool.clone(), CLIENTS, seconds).await?;
        let (server_before, postgres_before) = (served.cpu_seconds()?, cpu::PostgresCpu::now());
        let (xid_before, reads_before) = (next_xid(&raw_pool).await?, Reads::of(&http, &base).await?);
        let (rate, latencies, failures) = post_load(&http, &base, &token, &conversations, seconds).await?;
        server_cpu += served.cpu_seconds()? - server_before;
        postgres_cpu += cpu::postgres_since(&postgres_before);
        transactions += next_xid(&raw_pool).await? - xid_before;
        log_reads = log_reads.plus(Reads::of(&http, &base).await?.minus(reads_before));
        posts += latencies.len();
        println!("  round: raw {raw:.0}/s, posts {rate:.0}/s, ratio {:.2}", rate / raw);
        rounds.push((rate / raw, raw, rate));
        all.extend(latencies);
        failed += failures;
    }
    raw_pool.close().await;
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (ratio, raw, rate) = rounds[rounds.len() / 2];
    all.sort();
    println!();
    println!(
        "http: POST /conversations/{{id}}/messages, {CLIENTS} clients over {CONVERSATIONS} conversations, \
         {ROUNDS} rounds of {seconds} s each, median round"
    );
    println!("  raw single-row INSERT transactions/s ({CLIENTS} clients)  {raw:>10.0}");
    println!("  posts/s (201)                                   {rate:>10.0}   failures {failed}");
    println!("  ratio                                           {ratio:>10.2}  (target >= 0.40)");
    println!(
        "  latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms  (target p99 < 20 ms)",
        percentile(&all, 0.50),
        percentile(&all, 0.90),
        percentile(&all, 0.99)
    );
    let per_post = |seconds: f64| seconds * 1000.0 / posts.max(1) as f64;
    println!(
        "  CPU per post: server {:.3} ms, PostgreSQL {:.3} ms (all its processes; of {} cores)",
        per_post(server_cpu),
        per_post(postgres_cpu),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let per_post = |n: f64| n / posts.max(1) as f64;
    println!(
        "  per post: {:.2} write transactions (all of the cluster's); queries of the log by the node's \
         followers {:.3} by its one reader, {:.3} on their own; reads answered from its window {:.2}",
        per_post(transactions as f64),
        per_post(log_reads.node_reader),
        per_post(log_reads.own),
        per_post(log_reads.window)
    );
    served.stop().await;
    scratch.drop_db().await
}

/// Registers the benchmark's user and starts its [`CONVERSATIONS`] groups: its token and their ids.
async fn rooms(http: &reqwest::Client, base: &str) -> anyhow::Result<(String, Arc<Vec<String>>)> {
    let (token, _) = register(http, base).await?;
    let mut conversations = Vec::new();
    for i in 0..CONVERSATIONS {
        let c: Value = http
            .post(format!("{base}/api/v1/conversations"))
            .bearer_auth(&token)
            .json(&json!({"kind": "group", "title": format!("room {i}")}))
            .send()
            .await?
            .json()
            .await?;
        conversations.push(c["data"]["id"].as_str().unwrap_or_default().to_owned());
    }
    Ok((token, Arc::new(conversations)))
}

/// Three nodes (`parley serve` in child processes, each with its workers) on one database
/// against one, in alternating rounds: `POST /messages` with [`CLIENTS`] clients spread over the
/// nodes, posts/s and p99 of each, medians of the rounds.
pub async fn nodes(server: &PgConnectOptions, seconds: u64) -> anyhow::Result<()> {
    const NODE_ROUNDS: usize = 3;
    const NODE_POOL: u32 = 20;
    let scratch = Scratch::new(server, "nodes").await?;
    let url = scratch.options.to_url_lossy().to_string();
    let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build()?;
    // Three nodes' pools, listeners and leases within PostgreSQL's default 100 connections.
    let first = Served::spawn_with_pool(ChildServer::Parley, &url, NODE_POOL).await?;
    let base = format!("http://{}", first.addr);
    let (token, conversations) = rooms(&http, &base).await?;
    let mut one = Vec::new();
    let mut three = Vec::new();
    for _ in 0..NODE_ROUNDS {
        let before = (first.cpu_seconds()?, cpu::PostgresCpu::now());
        let (rate, latencies, failed) =
            spread_post_load(&http, std::slice::from_ref(&base), &token, &conversations, seconds).await?;
        let per_post = |cpu: f64| cpu * 1000.0 / latencies.len().max(1) as f64;
        println!(
            "  round: one node {rate:.0}/s, p99 {:.1} ms, failures {failed}; CPU per post: node {:.2} ms, PostgreSQL {:.2} ms",
            percentile(&latencies, 0.99),
            per_post(first.cpu_seconds()? - before.0),
            per_post(cpu::postgres_since(&before.1))
        );
        one.push((rate, percentile(&latencies, 0.99)));
        let second = Served::spawn_with_pool(ChildServer::Parley, &url, NODE_POOL).await?;
        let third = Served::spawn_with_pool(ChildServer::Parley, &url, NODE_POOL).await?;
        let bases = [base.clone(), format!("http://{}", second.addr), format!("http://{}", third.addr)];
        // A node's first requests warm its caches: not measured.
        spread_post_load(&http, &bases, &token, &conversations, 1).await?;
        let nodes_cpu = || -> anyhow::Result<f64> {
            Ok(first.cpu_seconds()? + second.cpu_seconds()? + third.cpu_seconds()?)
        };
        let before = (nodes_cpu()?, cpu::PostgresCpu::now());
        let (rate, latencies, failed) =
            spread_post_load(&http, &bases, &token, &conversations, seconds).await?;
        let per_post = |cpu: f64| cpu * 1000.0 / latencies.len().max(1) as f64;
        let (nodes_per_post, postgres_per_post) =
            (per_post(nodes_cpu()? - before.0), per_post(cpu::postgres_since(&before.1)));
        let mut fallbacks = 0.0;
        for base in &bases {
            fallbacks += metric_sum(&http, base, "parley_command_group_fallbacks_total").await?;
        }
        println!(
            "  round: three nodes {rate:.0}/s, p99 {:.1} ms, failures {failed}; CPU per post: nodes {nodes_per_post:.2} ms, \
             PostgreSQL {postgres_per_post:.2} ms; groups that fell back to running alone, since the nodes started: {fallbacks:.0}",
            percentile(&latencies, 0.99)
        );
        three.push((rate, percentile(&latencies, 0.99)));
        second.stop().await;
        third.stop().await;
    }
    let median = |v: &mut Vec<(f64, f64)>| {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v[v.len() / 2]
    };
    let (one_rate, one_p99) = median(&mut one);
    let (three_rate, three_p99) = median(&mut three);
    println!();
    println!(
        "nodes: POST /conversations/{{id}}/messages, {CLIENTS} clients over {CONVERSATIONS} conversations, \
         {NODE_ROUNDS} alternating rounds of {seconds} s, median round"
    );
    println!("  one node:    {one_rate:>8.0} posts/s  p99 {one_p99:>6.1} ms");
    println!(
        "  three nodes: {three_rate:>8.0} posts/s  p99 {three_p99:>6.1} ms  ({:.2}x one node's rate, on {} cores)",
        three_rate / one_rate,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    first.stop().await;
    scratch.drop_db().await
}

/// The id the next write transaction of the cluster will get: the difference over a phase is
/// the number of write transactions in it (read-only ones get no id).
async fn next_xid(pool: &sqlx::PgPool) -> anyhow::Result<u64> {
    let (xid,): (String,) =
        sqlx::query_as("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetch_one(pool).await?;
    Ok(xid.parse()?)
}

/// A node's followers' reads of the log so far (`parley_follower_reads_total`).
#[derive(Clone, Copy, Debug, Default)]
struct Reads {
    /// Queries of the log by the node's one reader.
    node_reader: f64,
    /// Queries of the log by followers on their own (outside the window).
    own: f64,
    /// Reads answered from the node's window.
    window: f64,
}

impl Reads {
    async fn of(http: &reqwest::Client, base: &str) -> anyhow::Result<Self> {
        let name = "parley_follower_reads_total";
        let source = |s: &'static str| move |l: &str| l.contains(&format!("source=\"{s}\""));
        Ok(Self {
            node_reader: metric_where(http, base, name, source("node_reader")).await?,
            own: metric_where(http, base, name, source("log")).await?,
            window: metric_where(http, base, name, source("window")).await?,
        })
    }

    fn minus(self, o: Self) -> Self {
        Self {
            node_reader: self.node_reader - o.node_reader,
            own: self.own - o.own,
            window: self.window - o.window,
        }
    }

    fn plus(self, o: Self) -> Self {
        Self {
            node_reader: self.node_reader + o.node_reader,
            own: self.own + o.own,
            window: self.window + o.window,
        }
    }
}

/// The sum of a metric's series on a node's `/metrics`.
async fn metric_sum(http: &reqwest::Client, base: &str, name: &str) -> anyhow::Result<f64> {
    metric_where(http, base, name, |_| true).await
}

/// The sum of a metric's series whose line `labels` accepts, on a node's `/metrics`.
async fn metric_where(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    labels: impl Fn(&str) -> bool,
) -> anyhow::Result<f64> {
    let text = http.get(format!("{base}/metrics")).send().await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && labels(l))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// `CLIENTS` posting for `seconds`: posts/s answered 201, their latencies, and the failures.
async fn post_load(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    conversations: &Arc<Vec<String>>,
    seconds: u64,
) -> anyhow::Result<(f64, Vec<Duration>, u64)> {
    spread_post_load(http, &[base.to_owned()], token, conversations, seconds).await
}

/// The same, each client sending to one of `bases` (client `i` to `bases[i % n]`).
async fn spread_post_load(
    http: &reqwest::Client,
    bases: &[String],
    token: &str,
    conversations: &Arc<Vec<String>>,
    seconds: u64,
) -> anyhow::Result<(f64, Vec<Duration>, u64)> {
    let (http, bases, token, conversations) =
        (http.clone(), Arc::new(bases.to_vec()), token.to_owned(), conversations.clone());
    timed_load(CLIENTS, seconds, move |client, n| {
        let (http, base, token, conversations) =
            (http.clone(), bases[client % bases.len()].clone(), token.clone(), conversations.clone());
        async move {
            let i = client + n * CLIENTS;
            let c = &conversations[i % CONVERSATIONS];
            http.post(format!("{base}/api/v1/conversations/{c}/messages"))
                .bearer_auth(&token)
                .json(&json!({"body": format!("message {i} from client {client}")}))
                .send()
                .await
                .is_ok_and(|r| r.status() == 201)
        }
    })
    .await
}

/// `clients` tasks each repeating `request(client, n)` (n = 0, 1, …) for `seconds`: successful
/// requests/s, their latencies (sorted), and the failures.
pub async fn timed_load<F, Fut>(
    clients: usize,
    seconds: u64,
    request: F,
) -> anyhow::Result<(f64, Vec<Duration>, u64)>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (request, stop) = (request.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut latencies, mut failures) = (Vec::new(), 0u64);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if request(client, n).await {
                        latencies.push(t.elapsed());
                    } else {
                        failures += 1;
                    }
                    n += 1;
                }
                (latencies, failures)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut failed) = (Vec::new(), 0);
    for t in tasks {
        let (latencies, failures) = t.await?;
        all.extend(latencies);
        failed += failures;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    Ok((all.len() as f64 / elapsed, all, failed))
}
