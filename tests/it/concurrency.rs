//! Commit-safe order under concurrency: no skipped event, no duplicate, each stream in order;
//! re-decidable commands never fail because of each other.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley_eventstore::claims;
use parley_eventstore::{EventStore, LogCursor, Metadata, NewEvent, StoreError, StreamAppend, StreamKey};
use parley_tests::TestApp;
use rand::Rng;
use serde_json::json;
use tokio::task::JoinHandle;
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

type Received = Arc<Mutex<Vec<(Uuid, String, i64, LogCursor)>>>;

/// Follows the log from `from` into `received`, pausing `pause` after every batch.
fn follow(store: EventStore, from: LogCursor, batch: i64, pause: Duration) -> (Received, JoinHandle<()>) {
    let received: Received = Arc::default();
    let task = tokio::spawn({
        let received = received.clone();
        async move {
            let mut tail = store.tail(from, batch);
            loop {
                let batch = tail.next_batch().await.unwrap();
                received.lock().unwrap().extend(
                    batch.into_iter().map(|e| (e.event_id, e.stream_id.clone(), e.version, e.cursor())),
                );
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        }
    });
    (received, task)
}

/// Runs the writers until `total` events committed; returns what committed.
async fn write(t: &Arc<TestApp>, total: usize) -> Vec<(Uuid, String, i64)> {
    let retries = Arc::new(AtomicUsize::new(0));
    let per_writer = total / WRITERS;
    let writers: Vec<_> =
        (0..WRITERS).map(|w| tokio::spawn(writer(t.clone(), w, per_writer, retries.clone()))).collect();
    let mut committed = Vec::with_capacity(total);
    for w in writers {
        committed.extend(w.await.unwrap());
    }
    eprintln!("{} transactions retried after claiming first", retries.load(Ordering::Relaxed));
    committed
}

/// Waits for `received` to hold as many events as `committed` (a follower never stops by
/// itself), then checks that it holds exactly those, once each, in commit-safe and stream order,
/// and that nothing is readable after its last cursor.
async fn assert_delivered(
    t: &TestApp,
    committed: &[(Uuid, String, i64)],
    received: &Received,
    task: JoinHandle<()>,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.lock().unwrap().len() < committed.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    let received = received.lock().unwrap().clone();
    let last = received.last().map(|r| r.3).unwrap_or_default();
    assert!(t.app.store.read_all_after(last, 10).await.unwrap().is_empty(), "nothing after the last cursor");

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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tailer_receives_every_committed_event_exactly_once_in_stream_order() {
    let t = Arc::new(TestApp::with_pool(WRITERS as u32 + 4).await);
    let (received, tailer) = follow(t.app.store.clone(), LogCursor::START, 500, Duration::ZERO);
    let committed = write(&t, TOTAL).await;
    assert_eq!(committed.len(), TOTAL);
    assert_delivered(&t, &committed, &received, tailer).await;
    Arc::into_inner(t).expect("no other owner").finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_of_the_nodes_one_reader_receive_every_event_exactly_once() {
    let t = Arc::new(TestApp::with_pool(WRITERS as u32 + 4).await);
    // A window of 64 events: the slow follower falls out of it and reads the log on its own,
    // then finds its way back.
    let shared = t.app.store.share_reads(64).await.unwrap();
    let store = t.app.store.clone();
    let followers = [
        follow(store.clone(), LogCursor::START, 500, Duration::ZERO),
        follow(store.clone(), LogCursor::START, 4, Duration::from_millis(5)),
        follow(store.clone(), LogCursor::START, 1, Duration::ZERO),
    ];
    let committed = write(&t, TOTAL / 4).await;
    for (received, task) in followers {
        assert_delivered(&t, &committed, &received, task).await;
    }
    let (from_window, from_log) = shared.reads();
    assert!(from_window > 0, "followers read from the window");
    assert!(from_log > 0, "the slow follower read the log itself");
    eprintln!("follower reads: {from_window} from the window, {from_log} from the log");
    shared.stop().await;
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
