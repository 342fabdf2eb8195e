//! Export and import throughput of the portable log (`parley replay export | import`), next to
//! the physical limit of both on the same log in the same run: an ordered read of every event
//! (a raw `SELECT ... ORDER BY position` streamed with sqlx, every column decoded); and the
//! process's peak memory growth during each, which must not follow the log's size.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use parley_eventstore::{db, EventStore, Upcasters};
use parley_replay::portable::{export_to_file, import_file};
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::Row;

use crate::rebuild::{rss_kib, seed};
use crate::Scratch;

/// Runs `work`; returns its result, its seconds and the process's RSS growth to its peak (MiB).
async fn measured<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<(T, f64, f64)> {
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
    let out = work.await;
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    sampler.await?;
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline) as f64 / 1024.0;
    Ok((out?, seconds, growth))
}

/// The limit: every event read in position order, every column decoded, nothing else done.
async fn ordered_read(pool: &PgPool) -> anyhow::Result<u64> {
    let mut rows = sqlx::query(
        "SELECT position, event_id, account_id, stream_type, stream_id, version, event_type, schema_version, \
                payload, metadata, recorded_at, prev_hash, hash FROM events ORDER BY position",
    )
    .fetch(pool);
    let mut n = 0u64;
    while let Some(row) = rows.try_next().await? {
        let _: (i64, uuid::Uuid, uuid::Uuid, String, String, i64, String, i32) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            row.try_get(4)?,
            row.try_get(5)?,
            row.try_get(6)?,
            row.try_get(7)?,
        );
        let _: (serde_json::Value, serde_json::Value, DateTime<Utc>, Vec<u8>, Vec<u8>) =
            (row.try_get(8)?, row.try_get(9)?, row.try_get(10)?, row.try_get(11)?, row.try_get(12)?);
        n += 1;
    }
    Ok(n)
}

pub async fn run(server: &PgConnectOptions, events: usize) -> anyhow::Result<()> {
    let source = Scratch::new(server, "export").await?;
    let pool = db::pool(source.options.clone(), 12).await?;
    let store = EventStore::new(pool.clone(), Upcasters::default());
    let seeding = Instant::now();
    seed(&store, events, 0).await?;
    println!();
    println!(
        "export and import of the portable log (seeded {events} MessagePosted events over 1000 conversations in {:.1} s)",
        seeding.elapsed().as_secs_f64()
    );
    let file = std::env::temp_dir().join(format!("parley-bench-export-{}.jsonl", std::process::id()));

    let (read, read_s, read_mem) = measured(ordered_read(&pool)).await?;
    let (exported, export_s, export_mem) =
        measured(async { Ok(export_to_file(&pool, None, &file, &()).await?) }).await?;
    let size = std::fs::metadata(&file)?.len() as f64 / (1024.0 * 1024.0);
    let target = Scratch::new(server, "import").await?;
    let target_pool = db::pool(target.options.clone(), 4).await?;
    let target_store = EventStore::new(target_pool.clone(), Upcasters::default());
    let (imported, import_s, import_mem) =
        measured(async { Ok(import_file(&target_store, &file, &()).await?) }).await?;
    anyhow::ensure!(imported.events == read && exported.events == read, "every event went through");

    let rate = |n: u64, s: f64| n as f64 / s.max(1e-9);
    println!(
        "  ordered read (limit): {:>9.0} events/s, memory growth to peak {read_mem:>6.1} MiB",
        rate(read, read_s)
    );
    println!(
        "  export:               {:>9.0} events/s, memory growth to peak {export_mem:>6.1} MiB, {size:.0} MiB file ({:.0}% of the limit)",
        rate(exported.events, export_s),
        100.0 * read_s / export_s.max(1e-9)
    );
    println!(
        "  import:               {:>9.0} events/s, memory growth to peak {import_mem:>6.1} MiB ({:.0}% of the limit; \
         every chain checked, write-side rows derived, one transaction)",
        rate(imported.events, import_s),
        100.0 * read_s / import_s.max(1e-9)
    );
    let _ = std::fs::remove_file(&file);
    target_pool.close().await;
    target.drop_db().await?;
    pool.close().await;
    source.drop_db().await
}
