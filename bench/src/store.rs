//! Raw single-row insert transactions/s next to Parley's appends/s, same shape, same clients:
//! appends that start streams, and appends onto streams that exist.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use parley_eventstore::{db, EventStore, Metadata, NewEvent, StreamAppend, StreamKey, Upcasters};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{cpu, Scratch};

fn payload(i: u64) -> serde_json::Value {
    json!({"message_id": Uuid::now_v7(), "conversation_id": Uuid::now_v7(), "author_id": Uuid::now_v7(),
           "body": format!("benchmark message number {i} with a body of ordinary length")})
}

/// Runs `op` on `clients` tasks for `seconds`; returns completed operations per second.
pub async fn measure<F, Fut>(clients: usize, seconds: u64, op: F) -> anyhow::Result<f64>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (op, stop, done) = (op.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    op(client, i).await?;
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

pub async fn raw_inserts(pool: PgPool, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    // The same columns, indexes and defaults as `events`, without the append-only trigger.
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_raw (LIKE events INCLUDING ALL)").execute(&pool).await?;
    let metadata = Metadata::system().to_json();
    measure(clients, seconds, move |_, i| {
        let (pool, metadata) = (pool.clone(), metadata.clone());
        async move {
            sqlx::query(
                "INSERT INTO bench_raw (event_id, account_id, stream_type, stream_id, version, event_type, \
                   schema_version, payload, metadata, recorded_at, prev_hash, hash) \
                 VALUES ($1, $2, 'Conversation', $3, 1, 'MessagePosted', 1, $4, $5, $6, $7, $8)",
            )
            .bind(Uuid::now_v7())
            .bind(Uuid::nil())
            .bind(Uuid::now_v7().to_string())
            .bind(payload(i))
            .bind(&metadata)
            .bind(Utc::now().trunc_subsecs(6))
            .bind(vec![0u8; 32])
            .bind(vec![1u8; 32])
            .execute(&pool)
            .await?;
            Ok(())
        }
    })
    .await
}

async fn store_appends(store: EventStore, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    measure(clients, seconds, move |_, i| {
        let store = store.clone();
        async move {
            let append = StreamAppend {
                account_id: Uuid::nil(),
                stream: StreamKey::new("Conversation", Uuid::now_v7().to_string()),
                expected_version: 0,
                events: vec![NewEvent::new("MessagePosted", 1, payload(i))],
                metadata: Metadata::system(),
            };
            store.append(&append).await?;
            Ok(())
        }
    })
    .await
}

/// One event at a time onto streams that exist (a post into a conversation): each client
/// appends to a stream of its own at the version it reached.
async fn store_appends_onto(store: EventStore, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let streams: Vec<StreamKey> =
        (0..clients).map(|_| StreamKey::new("Conversation", Uuid::now_v7().to_string())).collect();
    let versions: Arc<Vec<AtomicU64>> = Arc::new((0..clients).map(|_| AtomicU64::new(0)).collect());
    measure(clients, seconds, move |client, i| {
        let (store, stream, versions) = (store.clone(), streams[client].clone(), versions.clone());
        async move {
            let version = versions[client].load(Ordering::Relaxed) as i64;
            let append = StreamAppend {
                account_id: Uuid::nil(),
                stream,
                expected_version: version,
                events: vec![NewEvent::new("MessagePosted", 1, payload(i))],
                metadata: Metadata::system(),
            };
            store.append(&append).await?;
            versions[client].store(version as u64 + 1, Ordering::Relaxed);
            Ok(())
        }
    })
    .await
}

pub async fn run(server: &PgConnectOptions, clients: usize, seconds: u64) -> anyhow::Result<()> {
    let scratch = Scratch::new(server, "store").await?;
    let pool = db::pool(scratch.options.clone(), clients as u32 + 2).await?;
    // Warm up connections and caches for both, then measure each.
    let store = EventStore::new(pool.clone(), Upcasters::default());
    store_appends(store.clone(), clients, 1).await?;
    let (raw, raw_cpu) = cpu::costed(raw_inserts(pool.clone(), clients, seconds)).await?;
    let (appends, appends_cpu) = cpu::costed(store_appends(store.clone(), clients, seconds)).await?;
    let (onto, onto_cpu) = cpu::costed(store_appends_onto(store, clients, seconds)).await?;
    println!();
    println!("store ({clients} clients, {seconds} s each)");
    println!("  raw single-row INSERT transactions/s  {raw:>10.0}");
    println!("  store single-event appends/s          {appends:>10.0}");
    println!("  ratio                                 {:>10.2}  (target >= 0.8)", appends / raw);
    println!("  appends onto existing streams/s       {onto:>10.0}");
    println!("  ratio                                 {:>10.2}", onto / raw);
    cpu::print_per_op("raw INSERT", raw, seconds, raw_cpu);
    cpu::print_per_op("append, new stream", appends, seconds, appends_cpu);
    cpu::print_per_op("append onto a stream", onto, seconds, onto_cpu);
    pool.close().await;
    scratch.drop_db().await
}
