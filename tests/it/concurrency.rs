//! Commit-safe order under concurrency: no skipped event, no duplicate, each stream in order;
//! re-decidable commands never fail because of each other.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley_eventstore::claims;
use parley_eventstore::{LogCursor, Metadata, NewEvent, StoreError, StreamAppend, StreamKey};
use parley_tests::TestApp;
use rand::Rng;
use serde_json::json;
use uuid::Uuid;

const WRITERS: usize = 8;
const TOTAL: usize = 20_000;
const STREAMS: usize = 24;

/// Appends until `target` events of this writer have committed; returns (event id, stream, version).
async fn writer(
    t: Arc<TestApp>,
    writer: usize,
    target: usize,
    retries: Arc<AtomicUsize>,
) -> Vec<(Uuid, String, i64)> {
    let store = t.app.store.clone();
    let mut committed = Vec::with_capacity(target);
    while committed.len() < target {
        let (stream, claim_first, n, delay_us, roll_back) = {
            let mut rng = rand::rng();
            (
                StreamKey::new("Load", format!("s{}", rng.random_range(0..STREAMS))),
                rng.random_bool(0.2),
                rng.random_range(1..=3).min(target - committed.len()),
                rng.random_range(0..2_000),
                rng.random_bool(0.1),
            )
        };
        let mut tx = store.begin().await.unwrap();
        if claim_first {
            // Writing a claim first gives the transaction its id before it takes the stream lock.
            let value = Uuid::now_v7().to_string();
            claims::claim(tx.conn(), Uuid::nil(), "load", &value, &stream).await.unwrap();
        }
        let head = tx.lock_stream(&stream).await.unwrap();
        let events: Vec<NewEvent> =
            (0..n).map(|i| NewEvent::new("Loaded", 1, json!({"writer": writer, "i": i}))).collect();
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let batch = StreamAppend {
            account_id: Uuid::nil(),
            stream: stream.clone(),
            expected_version: head.version,
            events,
            metadata: Metadata::system(),
        };
        match tx.append(&batch).await {
            Ok(appended) => {
                tokio::time::sleep(Duration::from_micros(delay_us)).await;
                if roll_back {
                    drop(tx);
                    continue;
                }
                tx.commit().await.unwrap();
                for (id, e) in ids.into_iter().zip(appended.events) {
                    committed.push((id, stream.stream_id.clone(), e.version));
                }
            }
            Err(StoreError::RetryTransaction { .. }) => {
                retries.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("append failed: {e}"),
        }
    }
    committed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tailer_receives_every_committed_event_exactly_once_in_stream_order() {
    let t = Arc::new(TestApp::with_pool(WRITERS as u32 + 4).await);
    let retries = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(Mutex::new(Vec::<(Uuid, String, i64, LogCursor)>::with_capacity(TOTAL)));

    let tailer = tokio::spawn({
        let (store, received) = (t.app.store.clone(), received.clone());
        async move {
            let mut tail = store.tail(LogCursor::START, 500);
            loop {
                let batch = tail.next_batch().await.unwrap();
                let mut r = received.lock().unwrap();
                r.extend(batch.into_iter().map(|e| (e.event_id, e.stream_id.clone(), e.version, e.cursor())));
            }
        }
    });

    let per_writer = TOTAL / WRITERS;
    let writers: Vec<_> =
        (0..WRITERS).map(|w| tokio::spawn(writer(t.clone(), w, per_writer, retries.clone()))).collect();
    let mut committed = Vec::with_capacity(TOTAL);
    for w in writers {
        committed.extend(w.await.unwrap());
    }
    // Wait for the tailer to deliver everything (it never stops by itself), then check that
    // nothing more is readable after its last cursor.
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.lock().unwrap().len() < TOTAL && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tailer.abort();
    let received = received.lock().unwrap().clone();
    let last = received.last().map(|r| r.3).unwrap_or_default();
    assert!(t.app.store.read_all_after(last, 10).await.unwrap().is_empty(), "nothing after the last cursor");

    assert_eq!(committed.len(), TOTAL);
    let mut first_seen: HashMap<Uuid, usize> = HashMap::new();
    for (i, r) in received.iter().enumerate() {
        if let Some(prev) = first_seen.insert(r.0, i) {
            eprintln!(
                "DUP {:?} at {prev} and {i}; neighbours {:?} {:?}",
                r,
                received.get(prev.wrapping_sub(1)).map(|x| x.3),
                received.get(i.wrapping_sub(1)).map(|x| x.3)
            );
        }
    }
    let ids: HashSet<Uuid> = received.iter().map(|r| r.0).collect();
    assert_eq!(ids.len(), received.len(), "no event is delivered twice");
    let expected: HashSet<Uuid> = committed.iter().map(|c| c.0).collect();
    assert_eq!(ids, expected, "every committed event and nothing else is delivered");
    let mut next_version: HashMap<&str, i64> = HashMap::new();
    for (_, stream, version, _) in &received {
        let v = next_version.entry(stream.as_str()).or_insert(1);
        assert_eq!(*version, *v, "stream {stream} is delivered in version order");
        *v += 1;
    }
    assert!(received.windows(2).all(|w| w[0].3 < w[1].3), "cursors strictly increase");
    eprintln!("{} transactions retried after claiming first", retries.load(Ordering::Relaxed));
    Arc::into_inner(t).expect("no other owner").finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_posts_to_one_conversation_all_succeed() {
    let t = Arc::new(TestApp::with_pool(12).await);
    let (owner, _) = t.owner("owner@example.com").await;
    let group = t.app.commands.start_group(&owner, "All hands", &[]).await.unwrap();
    let conversation = group.aggregate.id.unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|task| {
            let (t, owner) = (t.clone(), owner.clone());
            tokio::spawn(async move {
                for i in 0..50 {
                    t.app.commands.post_message(&owner, conversation, &format!("{task}/{i}")).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stream = StreamKey::new("Conversation", conversation.to_string());
    let events = t.app.store.read_stream(&stream, 0, None).await.unwrap();
    let posted: Vec<_> = events.iter().filter(|e| e.event_type == "MessagePosted").collect();
    assert_eq!(posted.len(), 32 * 50);
    assert!(events.iter().enumerate().all(|(i, e)| e.version == i as i64 + 1));
    // Each task's messages are in its own order.
    let mut last: HashMap<String, i64> = HashMap::new();
    for e in posted {
        let body = e.payload["body"].as_str().unwrap();
        let (task, i) = body.split_once('/').unwrap();
        let i: i64 = i.parse().unwrap();
        assert!(last.insert(task.to_owned(), i).is_none_or(|prev| prev < i));
    }
    Arc::into_inner(t).expect("no other owner").finish().await;
}
