//! Rebuild throughput of the messages read model, and the process's peak memory during it, next
//! to the limit: the same rows the rebuild wrote, inserted in 100-row batches into tables
//! indexed identically (`LIKE ... INCLUDING ALL`), one statement after another as a rebuild
//! writes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_eventstore::{db, EventStore, Metadata, NewEvent, StreamAppend, StreamKey, Upcasters};
use parley_projections::read_models::MessagesProjection;
use parley_projections::{rebuild, LeaseOptions, Projection};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use crate::Scratch;

const CONVERSATIONS: usize = 1000;
const PER_APPEND: usize = 500;
const WRITERS: usize = 8;

/// Appends `count` MessagePosted events over [`CONVERSATIONS`] conversations.
pub(crate) async fn seed(store: &EventStore, count: usize, already: usize) -> anyhow::Result<()> {
    let account = Uuid::nil();
    let appends = count / PER_APPEND;
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (store, next) = (store.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if n >= appends {
                        return anyhow::Ok(());
                    }
                    // Each conversation gets its appends in order: append k of conversation c is
                    // number k * CONVERSATIONS + c, and waits for its predecessor by version.
                    let global = already / PER_APPEND + n;
                    let conversation = Uuid::from_u128(global as u128 % CONVERSATIONS as u128 + 1);
                    let expected = (global / CONVERSATIONS * PER_APPEND) as i64;
                    let events = (0..PER_APPEND)
                        .map(|i| {
                            NewEvent::new(
                                "MessagePosted",
                                1,
                                json!({"message_id": Uuid::now_v7(), "conversation_id": conversation,
                                       "author_id": Uuid::from_u128(7),
                                       "body": format!("message {} of a steady conversation", expected + i as i64 + 1)}),
                            )
                        })
                        .collect();
                    let append = StreamAppend {
                        account_id: account,
                        stream: StreamKey::new("Conversation", conversation.to_string()),
                        expected_version: expected,
                        events,
                        metadata: Metadata::system(),
                    };
                    // The previous append of this conversation may still be in flight.
                    loop {
                        match store.append(&append).await {
                            Ok(_) => break,
                            Err(e) if e.is_retryable() => tokio::task::yield_now().await,
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// The schema of the live generation of the messages read model.
async fn live_schema(pool: &sqlx::PgPool) -> anyhow::Result<String> {
    let (generation,): (i32,) = sqlx::query_as(
        "SELECT generation FROM projection_generations WHERE name = 'messages' AND state = 'live'",
    )
    .fetch_one(pool)
    .await?;
    Ok(parley_projections::schema_name("messages", generation))
}

/// A new empty table `{prefix}_{table}` with the columns, indexes and constraints of
/// `schema.table`; returns its name.
async fn empty_copy(pool: &sqlx::PgPool, schema: &str, table: &str, prefix: &str) -> anyhow::Result<String> {
    let copy = format!("{prefix}_{table}");
    sqlx::query(&format!("DROP TABLE IF EXISTS {copy}")).execute(pool).await?;
    sqlx::query(&format!("CREATE TABLE {copy} (LIKE {schema}.{table} INCLUDING ALL)")).execute(pool).await?;
    Ok(copy)
}

/// Every row of the live messages read model, inserted again into a copy of each of its tables
/// (same columns, indexes and constraints) in 100-row batches sent by the client, one statement
/// after another: how long the rows a rebuild writes take to write by hand. The rows are read
/// into memory first; only the inserts are timed.
async fn raw_batched_inserts(pool: &sqlx::PgPool) -> anyhow::Result<(usize, f64)> {
    let schema = live_schema(pool).await?;
    // The read model's tables, not their partitions: a partitioned table's rows are its
    // partitions' (counted once).
    let tables: Vec<String> = MessagesProjection.tables().iter().map(|t| t.to_string()).collect();
    // Each table's rows as text columns, inserted through `unnest` of text arrays cast to the
    // column types: the shape of the projections' own multi-row writes, 100 rows a statement.
    let mut loaded = Vec::new();
    for table in &tables {
        let copy = empty_copy(pool, &schema, table, "bench_raw").await?;
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
             WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        )
        .bind(format!("{schema}.{table}"))
        .fetch_all(pool)
        .await?;
        let select: Vec<String> = columns.iter().map(|(c, _)| format!("\"{c}\"::text")).collect();
        let rows = sqlx::query(&format!("SELECT {} FROM {schema}.{table}", select.join(", ")))
            .fetch_all(pool)
            .await?;
        let mut by_column: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(rows.len()); columns.len()];
        for row in &rows {
            for (i, column) in by_column.iter_mut().enumerate() {
                column.push(sqlx::Row::try_get(row, i)?);
            }
        }
        let params: Vec<String> = (1..=columns.len()).map(|i| format!("${i}::text[]")).collect();
        let names: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
        let casts: Vec<String> = columns.iter().enumerate().map(|(i, (_, t))| format!("c{i}::{t}")).collect();
        let insert = format!(
            "INSERT INTO {copy} SELECT {} FROM unnest({}) AS u({})",
            casts.join(", "),
            params.join(", "),
            names.join(", ")
        );
        loaded.push((insert, rows.len(), by_column));
    }
    let started = Instant::now();
    let mut count = 0;
    for (insert, n, by_column) in &loaded {
        for from in (0..*n).step_by(100) {
            let to = (from + 100).min(*n);
            let mut statement = sqlx::query(insert);
            for column in by_column {
                statement = statement.bind(&column[from..to]);
            }
            statement.execute(pool).await?;
            count += to - from;
        }
    }
    Ok((count, started.elapsed().as_secs_f64()))
}

/// The same rows again, each table's in one `COPY` (text format, read out of the live tables
/// first) into a copy of it indexed identically: the fastest way PostgreSQL loads rows, which a
/// rebuild (that must also apply the log in order, in batches that commit) can only approach.
async fn raw_copy(pool: &sqlx::PgPool) -> anyhow::Result<(u64, f64)> {
    use futures::TryStreamExt;
    use sqlx::postgres::PgPoolCopyExt;
    let schema = live_schema(pool).await?;
    let mut loaded = Vec::new();
    for table in MessagesProjection.tables() {
        let copy = empty_copy(pool, &schema, table, "bench_copy").await?;
        let data: Vec<u8> = pool
            .copy_out_raw(&format!("COPY (SELECT * FROM {schema}.{table}) TO STDOUT"))
            .await?
            .try_fold(Vec::new(), |mut all, chunk| async move {
                all.extend_from_slice(&chunk);
                Ok(all)
            })
            .await?;
        loaded.push((copy, data));
    }
    let started = Instant::now();
    let mut rows = 0;
    for (copy, data) in loaded {
        let mut conn = pool.acquire().await?;
        let mut writer = conn.copy_in_raw(&format!("COPY {copy} FROM STDIN")).await?;
        writer.send(data).await?;
        rows += writer.finish().await?;
    }
    Ok((rows, started.elapsed().as_secs_f64()))
}

pub(crate) fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Rebuilds the messages projection; returns (events/s, events, RSS growth in MiB from just
/// before the rebuild to its peak during it).
async fn measure(store: &EventStore, lease: LeaseOptions) -> anyhow::Result<(f64, i64, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let baseline = rss_kib();
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = tokio::spawn({
        let (stop, peak) = (stop.clone(), peak.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let started = Instant::now();
    let generation = rebuild(store, Arc::new(MessagesProjection), lease, |_| {}).await?;
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    sampler.await?;
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline) as f64 / 1024.0;
    Ok((generation.events_applied as f64 / elapsed, generation.events_applied, growth))
}

pub async fn run(server: &PgConnectOptions, events: usize) -> anyhow::Result<()> {
    let scratch = Scratch::new(server, "rebuild").await?;
    let pool = db::pool(scratch.options.clone(), WRITERS as u32 + 4).await?;
    let store = EventStore::new(pool.clone(), Upcasters::default());
    let lease = LeaseOptions::new(scratch.options.clone());
    let small = events / 4;
    let seeding = Instant::now();
    seed(&store, small, 0).await?;
    println!();
    println!(
        "rebuild of the messages read model (seeded {small} events in {:.1} s)",
        seeding.elapsed().as_secs_f64()
    );
    let (rate_small, n_small, peak_small) = measure(&store, lease.clone()).await?;
    println!(
        "  {n_small:>9} events: {rate_small:>9.0} events/s, memory growth to peak {peak_small:>6.1} MiB"
    );
    seed(&store, events - small, small).await?;
    let (rate_large, n_large, peak_large) = measure(&store, lease).await?;
    println!("  {n_large:>9} events: {rate_large:>9.0} events/s, memory growth to peak {peak_large:>6.1} MiB  (target >= 50000 events/s)");
    let rebuild_seconds = n_large as f64 / rate_large;
    let (rows, raw_seconds) = raw_batched_inserts(&pool).await?;
    println!(
        "  the limit: its {rows} rows inserted raw in 100-row batches into identically indexed tables: \
         {:.0} rows/s, {raw_seconds:.2} s against the rebuild's {rebuild_seconds:.2} s: rebuild {:.2} x the raw insert (target >= 1.0)",
        rows as f64 / raw_seconds,
        raw_seconds / rebuild_seconds
    );
    let (copied, copy_seconds) = raw_copy(&pool).await?;
    println!(
        "  the bulk-load ceiling: the same {copied} rows in one COPY per table into identically indexed tables: \
         {:.0} rows/s, {copy_seconds:.2} s: rebuild {:.2} x the raw COPY",
        copied as f64 / copy_seconds,
        copy_seconds / rebuild_seconds
    );
    println!(
        "  memory growth large/small: {:.2} for {:.1}x the events (independent of log size: ~1)",
        peak_large / peak_small.max(0.1),
        n_large as f64 / n_small.max(1) as f64
    );
    pool.close().await;
    scratch.drop_db().await
}
