//! Analytics over a year of one account's log (`--events`, default 1,000,000 `MessagePosted` by
//! 200 users over 1,000 conversations, recorded across 365 days through the store's clock): the
//! analytics read model rebuilt from the log (events/s) next to an ordered read of the same log
//! and to the messages read model's rebuild, then the backfill sealing the 365 days (days/s).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::{Days, NaiveDate};
use parley_commands::password::PasswordHasher;
use parley_commands::services::Commands;
use parley_commands::Dispatcher;
use parley_eventstore::{db, ActorKind, EventStore, Metadata, NewEvent, StreamAppend, StreamKey, Upcasters};
use parley_projections::read_models::{AnalyticsProjection, MessagesProjection};
use parley_projections::{rebuild, LeaseOptions};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use crate::Scratch;

const DAYS: u64 = 365;
const USERS: u128 = 200;
const CONVERSATIONS: usize = 1000;
const PER_APPEND: usize = 500;
const WRITERS: usize = 8;

fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 1, 1).unwrap_or_default()
}

/// `count` posts over the year: the store's clock follows how many appends are done.
async fn seed(store: &EventStore, account: Uuid, count: usize) -> anyhow::Result<()> {
    let appends = count / PER_APPEND;
    let done = Arc::new(AtomicU64::new(0));
    let clock_done = done.clone();
    let start = first_day().and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    store.use_clock(Arc::new(move || {
        let share = clock_done.load(Ordering::Relaxed) as f64 / appends.max(1) as f64;
        start + chrono::Duration::seconds((share * DAYS as f64 * 86_400.0) as i64)
    }));
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (store, next, done) = (store.clone(), next.clone(), done.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if n >= appends {
                        return anyhow::Ok(());
                    }
                    // Append k of conversation c is number k * CONVERSATIONS + c.
                    let conversation = Uuid::from_u128(n as u128 % CONVERSATIONS as u128 + 1);
                    let expected = (n / CONVERSATIONS * PER_APPEND) as i64;
                    let author = Uuid::from_u128(n as u128 % USERS + 1);
                    let events = (0..PER_APPEND)
                        .map(|i| {
                            NewEvent::new(
                                "MessagePosted",
                                1,
                                json!({"message_id": Uuid::now_v7(), "conversation_id": conversation,
                                       "author_id": author, "body": format!("message {}", expected + i as i64 + 1)}),
                            )
                        })
                        .collect();
                    let metadata =
                        Metadata { actor_type: ActorKind::User, actor_id: Some(author), ..Metadata::default() };
                    let append = StreamAppend {
                        account_id: account,
                        stream: StreamKey::new("Conversation", conversation.to_string()),
                        expected_version: expected,
                        events,
                        metadata,
                    };
                    loop {
                        match store.append(&append).await {
                            Ok(_) => break,
                            Err(e) if e.is_retryable() => tokio::task::yield_now().await,
                            Err(e) => return Err(e.into()),
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

pub async fn run(server: &PgConnectOptions, events: usize) -> anyhow::Result<()> {
    let scratch = Scratch::new(server, "analytics").await?;
    let pool = db::pool(scratch.options.clone(), WRITERS as u32 + 4).await?;
    let store = EventStore::new(pool.clone(), Upcasters::default());
    let lease = LeaseOptions::new(scratch.options.clone());
    let account = Uuid::now_v7();
    let seeding = Instant::now();
    seed(&store, account, events).await?;
    println!();
    println!(
        "analytics over a year of one account ({events} MessagePosted by {USERS} users over {DAYS} days, \
         seeded in {:.1} s)",
        seeding.elapsed().as_secs_f64()
    );

    // The limit: reading the same log in order into this process, as a rebuild does.
    let started = Instant::now();
    let mut rows =
        sqlx::query("SELECT payload, metadata, recorded_at, position FROM events ORDER BY position")
            .fetch(&pool);
    let mut read = 0u64;
    while futures::StreamExt::next(&mut rows).await.transpose()?.is_some() {
        read += 1;
    }
    drop(rows);
    let read_rate = read as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let analytics = rebuild(&store, Arc::new(AnalyticsProjection), lease.clone(), |_| {}).await?;
    let analytics_rate = analytics.events_applied as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let messages = rebuild(&store, Arc::new(MessagesProjection), lease, |_| {}).await?;
    let messages_rate = messages.events_applied as f64 / started.elapsed().as_secs_f64();
    println!(
        "  analytics read model rebuilt: {analytics_rate:>9.0} events/s  ({:.2} x an ordered read of the log, \
         {read_rate:.0}/s; {:.2} x the messages read model's rebuild, {messages_rate:.0}/s)",
        analytics_rate / read_rate,
        analytics_rate / messages_rate
    );

    // The backfill: every day of the year sealed, as `parley analytics backfill` does it.
    let today = first_day().checked_add_days(Days::new(DAYS + 1)).unwrap_or_default();
    store.use_clock(Arc::new(move || today.and_hms_opt(0, 5, 0).unwrap_or_default().and_utc()));
    let commands = Commands::new(Dispatcher::new(store.clone()), PasswordHasher::fast_insecure());
    let sealer = parley_api::analytics::Sealer { store: store.clone(), commands };
    let counted = store.head().await?;
    let started = Instant::now();
    let mut sealed = 0;
    for d in 0..DAYS {
        let day = first_day().checked_add_days(Days::new(d)).unwrap_or_default();
        sealed += sealer.seal_counted(day, None, counted).await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "  backfill: {sealed} days sealed in {seconds:.2} s: {:.0} days/s (each waits for the read model, \
         finds the accounts and records one AnalyticsDaySealed)",
        sealed as f64 / seconds
    );
    pool.close().await;
    scratch.drop_db().await
}
