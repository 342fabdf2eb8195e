//! `parley-bench`: Parley's benchmarks, each figure measured next to its physical limit in the
//! same run on the same server, so ratios hold on a noisy machine where absolute times do not.
//!
//! - `store`: raw single-row INSERT transactions/s of an events-shaped row with N clients, next
//!   to Parley's single-event appends/s to distinct streams with N writers.
//! - `commands`: Parley's command path (load, decide, append) starting groups on fresh streams
//!   with N writers, alone and with group commit, next to the cqrs-es + postgres-es peer run on
//!   the same aggregate and command and to the raw insert limit.
//! - `http`: `POST /conversations/{id}/messages` through the real server (a child process) with
//!   32 clients over 100 conversations: throughput and latency percentiles, next to the raw
//!   insert limit, the two alternated in rounds (the median round is reported), and the CPU each
//!   post cost the server and PostgreSQL.
//! - `nodes`: three `parley serve` nodes (child processes) on one database against one, the same
//!   32 posting clients spread over them, in alternating rounds: posts/s and p99 of each.
//! - `auth`: authenticated `GET /users/me` and `GET /api/v1/permissions` next to `GET /health`,
//!   64 clients: what token checking (signature and revocation) costs.
//! - `chat`: posting message number 100,000 of one conversation next to message number 100
//!   (p50 of sequential posts at each size), and fan-out: 1,000 WebSocket clients over 100
//!   conversations while messages are posted at 500/s, latency from each POST's answer to each
//!   subscriber's receipt (`--ws-clients`, `--conversations`, `--rate` change the load), and the
//!   server's memory (a child process) over the run and per connection.
//! - `jobs`: no-op jobs enqueued and completed per second next to raw INSERT transactions/s,
//!   pickup latency from the enqueuing commit at 500 jobs/s, and after `--jobs` jobs have passed
//!   through with pruning, the claim latency and the table's size.
//! - `webhooks`: delivery latency from a message's commit to a receiver on loopback at
//!   `--webhook-rate` events/s to 10 subscriptions; deliveries/s through one server next to no-op
//!   jobs/s through the same worker.
//! - `signals`: the relay's latency between two nodes at 1,000 signals/s, and a call's start to
//!   the callee's `CallRinging` frame on the other node.
//! - `cable`: the chat fan-out in Parley's dialect and in Action Cable's, alternating (two runs
//!   of each, `--fanout-seconds` up to 60): what the dialect costs.
//! - `analytics`: the analytics read model rebuilt over `--events` posts of one account spread
//!   over a year, next to an ordered read of the log and the messages read model's rebuild; then
//!   the backfill sealing the year's 365 days (days/s).
//! - `dashboard`: the dashboard in headless Chromium under a rising event rate: how far behind
//!   the page falls, next to a plain WebSocket client (needs `tests/js/node_modules`).
//! - `presence`: 10,000 WebSocket connections on one node (a child process): memory per
//!   connection and CPU while they idle, next to a bare axum WebSocket server holding as many.
//! - `export`: `parley replay export` and `import` events/s over `--export-events` MessagePosted
//!   events, next to an ordered read of the same log (a raw `SELECT ... ORDER BY position` streamed
//!   with sqlx), with the process's peak memory growth during each.
//! - `first-run`: seconds from spawning `parley serve --embedded-postgres` on an empty data
//!   folder to `/ready` = 200, and on the same folder again, next to `initdb` + `pg_ctl start`
//!   and `pg_ctl start` run directly (needs the `parley` binary next to the bench's).
//! - `rebuild`: rebuild events/s of the messages read model over a log of MessagePosted events,
//!   with the process's peak resident memory during the rebuild, at two log sizes.
//! - `creator`: `--creator-viewers` WebSocket connections joining one live stream (a child
//!   process serves): join latency next to a bare connect → `welcome` through the same server,
//!   and how long after the last join every connection hears the final viewer count, next to the
//!   count's one-second tick; then a space of `--creator-experiences` experiences listed page by
//!   page next to `GET /health` and the page's raw `SELECT`.

mod analytics;
mod auth;
mod chat;
mod cpu;
mod creator;
mod dashboard;
mod export;
mod first_run;
mod http;
mod jobs;
mod peer;
mod presence;
mod rebuild;
mod signals;
mod store;
mod webhooks;

use std::str::FromStr;

use clap::{Parser, ValueEnum};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

/// The allocator of the `parley` binary, so the server measured here is the one that ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Suite {
    Store,
    /// Parley's command path next to the cqrs-es + postgres-es peer.
    Commands,
    /// Three nodes on one database against one.
    Nodes,
    Rebuild,
    Http,
    Auth,
    Chat,
    Jobs,
    Webhooks,
    Signals,
    Presence,
    Cable,
    Analytics,
    Dashboard,
    Export,
    FirstRun,
    Creator,
    All,
}

#[derive(Debug, Parser)]
#[command(name = "parley-bench")]
struct Args {
    /// The server to benchmark on (a scratch database is created and dropped).
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    #[arg(long, value_enum, default_value = "all")]
    suite: Suite,
    /// Concurrent clients for the store suite.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds each store measurement runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Events in the large rebuild (the small one has a quarter of them).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Messages in the large conversation of the chat suite.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// WebSocket clients of the chat fan-out.
    #[arg(long, default_value_t = 1000)]
    ws_clients: usize,
    /// Conversations the fan-out's clients subscribe to.
    #[arg(long, default_value_t = 100)]
    conversations: usize,
    /// Posts per second during the fan-out.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// How long the fan-out runs, in seconds.
    #[arg(long, default_value_t = 300)]
    fanout_seconds: u64,
    /// Events per second of the webhooks suite's latency phase.
    #[arg(long, default_value_t = 200)]
    webhook_rate: u64,
    /// Jobs passed through the queue (with pruning) before claim latency and table size are read.
    #[arg(long, default_value_t = 1_000_000)]
    jobs: usize,
    /// WebSocket connections the presence suite holds on one node.
    #[arg(long, default_value_t = 10_000)]
    presence_connections: usize,
    /// Events in the log the export suite exports and imports.
    #[arg(long, default_value_t = 200_000)]
    export_events: usize,
    /// Viewer connections of the creator suite's live stream (ten per user).
    #[arg(long, default_value_t = 10_000)]
    creator_viewers: usize,
    /// Experiences in the space the creator suite lists.
    #[arg(long, default_value_t = 10_000)]
    creator_experiences: usize,
    /// Serve in this process for a suite that measures a server apart from its clients.
    #[arg(long, value_enum, hide = true)]
    child: Option<presence::ChildServer>,
}

/// A scratch database, dropped at the end.
pub struct Scratch {
    pub options: PgConnectOptions,
    server: PgConnectOptions,
    name: String,
}

impl Scratch {
    pub async fn new(server: &PgConnectOptions, purpose: &str) -> anyhow::Result<Self> {
        let scratch = Self::bare(server, purpose).await?;
        let mut conn = PgConnection::connect_with(&scratch.options).await?;
        parley_migrations::MIGRATOR.run(&mut conn).await?;
        conn.close().await?;
        Ok(scratch)
    }

    /// A scratch database without Parley's schema (for a peer's tables).
    pub async fn bare(server: &PgConnectOptions, purpose: &str) -> anyhow::Result<Self> {
        let name = format!("parley_bench_{purpose}_{}", uuid::Uuid::now_v7().simple());
        let mut admin = PgConnection::connect_with(server).await?;
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await?;
        admin.close().await?;
        let options = parley_eventstore::db::connect_options(
            server.clone().database(&name).to_url_lossy().as_ref(),
            "parley-bench",
        )?;
        Ok(Self { options, server: server.clone(), name })
    }

    pub async fn drop_db(self) -> anyhow::Result<()> {
        let mut admin = PgConnection::connect_with(&self.server).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        Ok(())
    }
}

/// `config` as the benchmark serves it: a free port, a fixed token secret and no practical
/// per-credential request limit (a benchmark's users make thousands a minute); the rest as
/// `parley serve` has it.
pub fn serving(mut config: parley_api::Config) -> parley_api::Config {
    config.bind = "127.0.0.1:0".into();
    config.jwt_secret = Some(parley_api::config::Secret::new("bench"));
    config.api_rate_per_minute = u32::MAX;
    config
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(kind) = args.child {
        let ttl = parley_api::Config::new(args.database_url.clone()).presence_ttl_seconds;
        return presence::child(kind, &args.database_url, std::time::Duration::from_secs(ttl) / 3).await;
    }
    let server = PgConnectOptions::from_str(&args.database_url)?.database("postgres");
    println!(
        "parley-bench on {} cores; PostgreSQL at {}:{}",
        num_cpus(),
        server.get_host(),
        server.get_port()
    );
    if matches!(args.suite, Suite::Store | Suite::All) {
        store::run(&server, args.clients, args.seconds).await?;
    }
    if matches!(args.suite, Suite::Commands | Suite::All) {
        peer::run(&server, args.clients, args.seconds).await?;
    }
    if matches!(args.suite, Suite::Rebuild | Suite::All) {
        rebuild::run(&server, args.events).await?;
    }
    if matches!(args.suite, Suite::Http | Suite::All) {
        http::run(&server, args.seconds).await?;
    }
    if matches!(args.suite, Suite::Nodes | Suite::All) {
        http::nodes(&server, args.seconds).await?;
    }
    if matches!(args.suite, Suite::Auth | Suite::All) {
        auth::run(&server, args.seconds).await?;
    }
    if matches!(args.suite, Suite::Chat | Suite::All) {
        chat::growth(&server, args.messages).await?;
        let (clients, conversations, rate, seconds) =
            (args.ws_clients, args.conversations, args.rate, args.fanout_seconds);
        chat::fanout(&server, clients, conversations, rate, seconds, chat::Dialect::Parley).await?;
    }
    if matches!(args.suite, Suite::Jobs | Suite::All) {
        jobs::run(&server, args.seconds, args.jobs).await?;
    }
    if matches!(args.suite, Suite::Webhooks | Suite::All) {
        webhooks::run(&server, args.seconds, args.webhook_rate).await?;
    }
    if matches!(args.suite, Suite::Signals | Suite::All) {
        signals::run(&server, args.seconds).await?;
    }
    if matches!(args.suite, Suite::Cable | Suite::All) {
        // The same fan-out in each dialect, alternating, so both see the same machine.
        let (clients, conversations, rate, seconds) =
            (args.ws_clients, args.conversations, args.rate, args.fanout_seconds.min(60));
        for dialect in [
            chat::Dialect::Parley,
            chat::Dialect::ActionCable,
            chat::Dialect::Parley,
            chat::Dialect::ActionCable,
        ] {
            chat::fanout(&server, clients, conversations, rate, seconds, dialect).await?;
        }
    }
    if matches!(args.suite, Suite::Analytics | Suite::All) {
        analytics::run(&server, args.events).await?;
    }
    if matches!(args.suite, Suite::Dashboard | Suite::All) {
        dashboard::run(&server).await?;
    }
    if matches!(args.suite, Suite::Export | Suite::All) {
        export::run(&server, args.export_events).await?;
    }
    if matches!(args.suite, Suite::FirstRun | Suite::All) {
        first_run::run().await?;
    }
    if matches!(args.suite, Suite::Presence | Suite::All) {
        let idle = std::time::Duration::from_secs(args.seconds);
        presence::run(&server, args.presence_connections, idle).await?;
    }
    if matches!(args.suite, Suite::Creator | Suite::All) {
        creator::run(&server, args.creator_viewers, args.creator_experiences, args.seconds).await?;
    }
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
