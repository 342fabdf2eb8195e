//! The log's own guarantees: expected versions, append-only, hash chain, metadata, upcasting,
//! snapshots, claims.

use parley_eventstore::{
    EventStore, Metadata, NewEvent, StoreError, StreamAppend, StreamKey, Upcaster, Upcasters, ASYNC_COMMIT,
};
use parley_tests::TestApp;
use serde_json::{json, Value};
use uuid::Uuid;

fn append(stream: &StreamKey, expected: i64, n: usize) -> StreamAppend {
    StreamAppend {
        account_id: Uuid::nil(),
        stream: stream.clone(),
        expected_version: expected,
        events: (0..n).map(|i| NewEvent::new("ThingHappened", 1, json!({"i": i}))).collect(),
        metadata: Metadata::system(),
    }
}

#[tokio::test]
async fn a_second_writer_with_a_stale_version_gets_a_conflict_and_no_duplicate_version_exists() {
    let t = TestApp::new().await;
    let store = &t.app.store;
    for round in 0..10 {
        let stream = StreamKey::new("Thing", format!("t{round}"));
        store.append(&append(&stream, 0, 1)).await.unwrap();
        // Eight writers all believe the stream is at version 1.
        let results = futures::future::join_all((0..8).map(|_| {
            let store = store.clone();
            let batch = append(&stream, 1, 2);
            async move { store.append(&batch).await }
        }))
        .await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "exactly one writer wins round {round}");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert!(
                matches!(r, StoreError::WrongExpectedVersion { expected: 1, actual: 3, .. }),
                "the losers see a conflict naming the real version: {r:?}"
            );
        }
        let versions: Vec<i64> =
            store.read_stream(&stream, 0, None).await.unwrap().iter().map(|e| e.version).collect();
        assert_eq!(versions, vec![1, 2, 3]);
    }
    t.finish().await;
}

#[tokio::test]
async fn two_open_transactions_on_one_stream_queue_and_the_second_conflicts() {
    let t = TestApp::new().await;
    let store = &t.app.store;
    let stream = StreamKey::new("Thing", "x");
    let mut first = store.begin().await.unwrap();
    first.append(&append(&stream, 0, 1)).await.unwrap();
    let second = tokio::spawn({
        let store = store.clone();
        let stream = stream.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            tx.append(&append(&stream, 0, 1)).await
        }
    });
    // The second waits on the stream lock until the first commits.
    tokio::task::yield_now().await;
    first.commit().await.unwrap();
    let err = second.await.unwrap().unwrap_err();
    assert!(matches!(err, StoreError::WrongExpectedVersion { expected: 0, actual: 1, .. }), "{err:?}");
    t.finish().await;
}

#[tokio::test]
async fn the_log_refuses_update_delete_and_truncate() {
    let t = TestApp::new().await;
    let stream = StreamKey::new("Thing", "x");
    t.app.store.append(&append(&stream, 0, 2)).await.unwrap();
    let pool = t.app.store.pool();
    for sql in ["UPDATE events SET payload = '{}'", "DELETE FROM events WHERE version = 2", "TRUNCATE events"]
    {
        let err = sqlx::query(sql).execute(pool).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(t.app.store.read_stream(&stream, 0, None).await.unwrap().len(), 2);
    t.finish().await;
}

#[tokio::test]
async fn events_chain_their_hashes_and_carry_their_metadata() {
    let t = TestApp::new().await;
    let stream = StreamKey::new("Thing", "x");
    let actor = Uuid::now_v7();
    let mut batch = append(&stream, 0, 3);
    batch.metadata = Metadata {
        actor_type: parley_eventstore::ActorKind::User,
        actor_id: Some(actor),
        correlation_id: Some(Uuid::now_v7()),
        causation_id: None,
        request_id: Some("req-1".into()),
        client_ip: Some("127.0.0.1".into()),
    };
    let appended = t.app.store.append(&batch).await.unwrap();
    assert_eq!(appended.events.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1, 2, 3]);
    let rows: Vec<(Vec<u8>, Vec<u8>, Value)> =
        sqlx::query_as("SELECT prev_hash, hash, metadata FROM events ORDER BY version")
            .fetch_all(t.app.store.pool())
            .await
            .unwrap();
    assert_eq!(rows[0].0, vec![0u8; 32], "the first event chains from the genesis hash");
    assert_eq!(rows[1].0, rows[0].1);
    assert_eq!(rows[2].0, rows[1].1);
    assert_eq!(rows[0].2["actor_id"], json!(actor));
    assert_eq!(rows[0].2["request_id"], json!("req-1"));
    assert_eq!(rows[0].2["actor_type"], json!("user"));
    let recorded = t.app.store.read_stream(&stream, 0, None).await.unwrap();
    assert_eq!(recorded[2].actor_id(), Some(actor));
    assert_eq!(recorded[2].cursor(), appended.events[2].cursor());
    t.finish().await;
}

fn rename_text_to_body(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        if let Some(text) = o.remove("text") {
            o.insert("body".into(), text);
        }
    }
    v
}

#[tokio::test]
async fn old_schema_versions_are_upcast_on_read_and_never_rewritten() {
    let t = TestApp::new().await;
    let stream = StreamKey::new("Thing", "x");
    let mut old = append(&stream, 0, 1);
    old.events[0] = NewEvent::new("Noted", 1, json!({"text": "hello"}));
    t.app.store.append(&old).await.unwrap();
    let store = EventStore::new(
        t.app.store.pool().clone(),
        Upcasters::new([Upcaster { event_type: "Noted", from_version: 1, upcast: rename_text_to_body }]),
    );
    let read = store.read_stream(&stream, 0, None).await.unwrap();
    assert_eq!((read[0].schema_version, &read[0].payload), (2, &json!({"body": "hello"})));
    let tailed = store.tail(Default::default(), 10).next_batch().await.unwrap();
    assert_eq!(tailed[0].payload, json!({"body": "hello"}));
    let (stored,): (Value,) =
        sqlx::query_as("SELECT payload FROM events").fetch_one(store.pool()).await.unwrap();
    assert_eq!(stored, json!({"text": "hello"}), "the stored event is untouched");
    t.finish().await;
}

#[tokio::test]
async fn the_log_is_read_in_numeric_transaction_order_across_digit_boundaries() {
    // Transaction ids whose text order differs from their numeric order. A reader that sorted by
    // the text of the id would repeat or skip events when ids gain a digit.
    let t = TestApp::new().await;
    let pool = t.app.store.pool();
    let xids: [u64; 9] = [8, 9, 10, 11, 99, 100, 101, 999, 1000];
    for (i, xid) in xids.iter().enumerate() {
        for version in 1..=2 {
            sqlx::query(
                "INSERT INTO events (transaction_id, event_id, account_id, stream_type, stream_id, version, \
                   event_type, schema_version, payload, metadata, recorded_at, prev_hash, hash) \
                 VALUES ($1::text::xid8, $2, $3, 'Thing', $4, $5, 'ThingHappened', 1, '{}', '{}', now(), '\\x00', '\\x01')",
            )
            .bind(xid.to_string())
            .bind(Uuid::now_v7())
            .bind(Uuid::nil())
            .bind(format!("t{i}"))
            .bind(version)
            .execute(pool)
            .await
            .unwrap();
        }
    }
    let expected: Vec<u64> = xids.iter().flat_map(|x| [*x, *x]).collect();
    for page in 1..=5 {
        let mut cursor = parley_eventstore::LogCursor::START;
        let mut seen = Vec::new();
        loop {
            let batch = t.app.store.read_all_after(cursor, page).await.unwrap();
            let Some(last) = batch.last() else { break };
            cursor = last.cursor();
            seen.extend(batch.iter().map(|e| e.transaction_id));
        }
        assert_eq!(seen, expected, "pages of {page}");
    }
    assert_eq!(t.app.store.head().await.unwrap().transaction_id, 1000, "the head is the numerically last");
    t.finish().await;
}

#[tokio::test]
async fn several_streams_appended_in_one_call_keep_every_rule_of_a_single_append() {
    let t = TestApp::new().await;
    let store = &t.app.store;
    let (a, b, c) =
        (StreamKey::new("Thing", "a"), StreamKey::new("Thing", "b"), StreamKey::new("Thing", "c"));
    store.append(&append(&a, 0, 1)).await.unwrap();

    let mut tx = store.begin().await.unwrap();
    tx.lock_streams(&[a.clone(), b.clone(), c.clone()]).await.unwrap();
    let appended = tx
        .append_all(&[&append(&a, 1, 2), &append(&b, 0, 1), &append(&c, 0, 3), &append(&a, 3, 1)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let versions: Vec<Vec<i64>> =
        appended.iter().map(|x| x.events.iter().map(|e| e.version).collect()).collect();
    assert_eq!(versions, vec![vec![2, 3], vec![1], vec![1, 2, 3], vec![4]]);
    // One transaction; positions in the order given.
    let positions: Vec<i64> = appended.iter().flat_map(|x| x.events.iter().map(|e| e.position)).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    assert!(appended
        .iter()
        .flat_map(|x| &x.events)
        .all(|e| e.transaction_id == appended[0].events[0].transaction_id));
    // Every chain verifies, as if each stream had been appended alone.
    let report = parley_replay::verify(store.pool(), None, &[]).await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!((report.streams, report.events), (3, 8));

    // One stale expected version refuses the whole call: nothing of it is written.
    let mut tx = store.begin().await.unwrap();
    tx.lock_streams(&[b.clone(), c.clone()]).await.unwrap();
    let refused = tx.append_all(&[&append(&b, 1, 1), &append(&c, 2, 1)]).await;
    // The refusal names the stream and the versions, as for a single append.
    assert!(
        matches!(&refused, Err(StoreError::WrongExpectedVersion { stream_id, expected: 2, actual: 3, .. }) if stream_id == "c"),
        "{refused:?}"
    );
    assert_eq!(refused.unwrap_err().refused_stream(), Some(c.clone()));
    tx.rollback().await.unwrap();
    let (events,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM events").fetch_one(store.pool()).await.unwrap();
    assert_eq!(events, 8);
    t.finish().await;
}

#[tokio::test]
async fn a_statement_under_the_async_commit_condition_commits_without_waiting_for_the_flush_and_only_itself()
{
    let t = TestApp::new().await;
    let mut conn = t.app.store.pool().acquire().await.unwrap();
    // Given a statement run on its own with the condition, its transaction commits with
    // synchronous_commit off (the condition is evaluated before any row is produced),
    let (during,): (String,) = sqlx::query_as(&format!(
        "SELECT current_setting('synchronous_commit') FROM (VALUES (1)) AS v(x) WHERE {ASYNC_COMMIT}"
    ))
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(during, "off");
    // and an UPDATE under it that matches no row still runs it and changes nothing,
    let updated = sqlx::query(&format!(
        "UPDATE consumer_checkpoints SET updated_at = now() WHERE name = 'nobody' AND {ASYNC_COMMIT}"
    ))
    .execute(&mut *conn)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(updated, 0);
    // then the session's next transaction commits synchronously again.
    let (after,): (String,) =
        sqlx::query_as("SELECT current_setting('synchronous_commit')").fetch_one(&mut *conn).await.unwrap();
    assert_eq!(after, "on");
    drop(conn);
    t.finish().await;
}

/// Whether the transaction of backend `pid` holds the advisory lock of `stream`.
async fn holds_stream_lock(pool: &sqlx::PgPool, pid: i32, stream: &StreamKey) -> bool {
    let (held,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = $1 \
           AND ((classid::bigint << 32) | objid::bigint) = hashtextextended($2, 0))",
    )
    .bind(pid)
    .bind(stream.to_string())
    .fetch_one(pool)
    .await
    .unwrap();
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_appending_to_several_streams_locks_them_all_in_one_order_before_it_waits() {
    let t = TestApp::new().await;
    let store = &t.app.store;
    let (a, b) = (StreamKey::new("Thing", "a"), StreamKey::new("Thing", "b"));
    // Given a writer holding b,
    let mut holder = store.begin().await.unwrap();
    holder.lock_stream(&b).await.unwrap();
    // when a call appends to b then a (in that order), on its own connection,
    let mut conn = store.pool().acquire().await.unwrap();
    let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()").fetch_one(&mut *conn).await.unwrap();
    let call = {
        let (a, b) = (a.clone(), b.clone());
        tokio::spawn(async move {
            sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
            let out: (i64,) = sqlx::query_as(
                "SELECT count(*) FROM parley_append_all( \
                   ARRAY[$1::uuid, $1], ARRAY['Thing', 'Thing'], ARRAY[$2, $3], ARRAY[0::bigint, 0], \
                   ARRAY[gen_random_uuid(), gen_random_uuid()], ARRAY['ThingHappened', 'ThingHappened'], \
                   ARRAY[1, 1], ARRAY['{}'::jsonb, '{}'], ARRAY['{}'::jsonb, '{}'], now(), \
                   ARRAY['\\x01'::bytea, '\\x02'])",
            )
            .bind(Uuid::nil())
            .bind(&b.stream_id)
            .bind(&a.stream_id)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
            sqlx::query("COMMIT").execute(&mut *conn).await.unwrap();
            out.0
        })
    };
    // then it waits for b already holding a: every lock of the call is taken in the order of
    // the streams' keys (a before b), whatever the order of its events.
    loop {
        let (waits,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND NOT granted)",
        )
        .bind(pid)
        .fetch_one(store.pool())
        .await
        .unwrap();
        if waits {
            break;
        }
        assert!(!call.is_finished(), "the call did not wait for the held stream");
        tokio::task::yield_now().await;
    }
    assert!(holds_stream_lock(store.pool(), pid, &a).await, "a is locked before waiting for b");
    assert!(!holds_stream_lock(store.pool(), pid, &b).await);
    // Once b is free, the call appends both.
    holder.rollback().await.unwrap();
    assert_eq!(call.await.unwrap(), 2);
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_appending_to_the_same_streams_in_opposite_orders_never_deadlock() {
    let t = TestApp::new().await;
    let store = &t.app.store;
    for round in 0..20 {
        let (a, b) =
            (StreamKey::new("Thing", format!("{round}a")), StreamKey::new("Thing", format!("{round}b")));
        let call = |first: StreamKey, second: StreamKey| {
            let store = store.clone();
            async move {
                let mut tx = store.begin().await?;
                tx.append_all(&[&append(&first, 0, 1), &append(&second, 0, 1)]).await?;
                tx.commit().await
            }
        };
        let (ab, ba) = tokio::join!(call(a.clone(), b.clone()), call(b.clone(), a.clone()));
        // Exactly one lands; the other finds the streams written, never a deadlock.
        assert!(ab.is_ok() != ba.is_ok(), "round {round}: {ab:?} / {ba:?}");
        let refused = ab.err().or(ba.err()).unwrap();
        assert!(
            matches!(refused, StoreError::WrongExpectedVersion { actual: 1, .. }),
            "round {round}: {refused:?}"
        );
    }
    t.finish().await;
}

#[tokio::test]
async fn an_append_after_a_named_head_event_refuses_another_head_at_the_same_version() {
    let t = TestApp::new().await;
    let store = &t.app.store;
    let (a, b) = (StreamKey::new("Thing", "a"), StreamKey::new("Thing", "b"));
    // Given a decision made on a state whose last event was planned but never committed, while
    // another writer appended as many events,
    let planned = append(&a, 0, 1);
    let planned_head = planned.events[0].event_id;
    let other = store.append(&append(&a, 0, 1)).await.unwrap();
    // when the next append expects the version that state had, after the planned event,
    let mut tx = store.begin().await.unwrap();
    let refused =
        tx.append_all_after(&[&append(&b, 0, 1), &append(&a, 1, 1)], &[None, Some(planned_head)]).await;
    // then it is refused like a stale version, naming the stream, and nothing is written;
    assert!(
        matches!(&refused, Err(StoreError::WrongExpectedVersion { stream_id, expected: 1, actual: 1, .. }) if stream_id == "a"),
        "{refused:?}"
    );
    tx.rollback().await.unwrap();
    let (events,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM events").fetch_one(store.pool()).await.unwrap();
    assert_eq!(events, 1);
    // and after the head it names, it is appended.
    let mut tx = store.begin().await.unwrap();
    let head = Some(other.events[0].event_id);
    let appended = tx.append_all_after(&[&append(&a, 1, 2)], &[head]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(appended[0].events.iter().map(|e| e.version).collect::<Vec<_>>(), [2, 3]);
    t.finish().await;
}

/// Given writers that append without a transaction (one event onto a stream, or a new stream
/// of one or three events: the statements that take no lock) beside writers that lock the same
/// streams in transactions, all racing on a few streams and retrying at the version a refusal
/// names; when they are done, then no version was written twice or skipped, every refusal named
/// the stream's real version at the time, each stream's events come in version order in the
/// log's commit-safe order (what tailers read), and every hash chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_without_a_transaction_beside_locked_transactions_keep_every_rule_of_the_log() {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;
    let t = TestApp::new().await;
    let store = &t.app.store;
    let shared: Vec<StreamKey> = (0..3).map(|i| StreamKey::new("Thing", format!("shared-{i}"))).collect();
    let accepted = Arc::new(AtomicI64::new(0));
    let tasks: Vec<_> = (0..12)
        .map(|writer| {
            let (store, shared, accepted) = (store.clone(), shared.clone(), accepted.clone());
            tokio::spawn(async move {
                let mut versions = [0i64; 3];
                for round in 0..30 {
                    let at = (writer + round) % shared.len();
                    let (stream, known) = (&shared[at], &mut versions[at]);
                    if round % 5 == 4 {
                        // A new stream, racing another writer for the same one.
                        let fresh = StreamKey::new("Thing", format!("fresh-{}-{round}", writer / 2));
                        let n = 1 + 2 * (writer % 2);
                        match store.append(&append(&fresh, 0, n)).await {
                            Ok(done) => {
                                let versions: Vec<i64> = done.events.iter().map(|e| e.version).collect();
                                assert_eq!(versions, (1..=n as i64).collect::<Vec<_>>());
                                accepted.fetch_add(n as i64, Ordering::SeqCst);
                            }
                            Err(StoreError::WrongExpectedVersion { expected: 0, actual, .. }) => {
                                assert!(actual == 1 || actual == 3, "the winner's version, {actual}")
                            }
                            Err(e) => panic!("{e:?}"),
                        }
                        continue;
                    }
                    loop {
                        let outcome = if writer % 3 == 0 {
                            let mut tx = store.begin().await.unwrap();
                            let head = tx.lock_stream(stream).await.unwrap();
                            *known = head.version;
                            let appended = tx.append(&append(stream, *known, 1)).await;
                            match appended {
                                Ok(done) => tx.commit().await.map(|_| done),
                                Err(e) => Err(e),
                            }
                        } else {
                            store.append(&append(stream, *known, 1)).await
                        };
                        match outcome {
                            Ok(done) => {
                                assert_eq!(done.events[0].version, *known + 1);
                                *known += 1;
                                accepted.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                            Err(StoreError::WrongExpectedVersion { expected, actual, .. })
                                if writer % 3 != 0 =>
                            {
                                assert_eq!(expected, *known);
                                assert!(
                                    actual > expected,
                                    "refused at {expected}: a writer got there first, at {actual}"
                                );
                                *known = actual;
                            }
                            Err(e) if e.is_retryable() => {}
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    // Readers stop at the oldest open transaction of the server (other tests' included).
    t.settle().await;
    let all = store.read_all_after(parley_eventstore::LogCursor::START, 100_000).await.unwrap();
    assert_eq!(all.len() as i64, accepted.load(Ordering::SeqCst), "every accepted event, once");
    let mut seen: std::collections::HashMap<(String, String), i64> = Default::default();
    for e in &all {
        let last = seen.entry((e.stream_type.clone(), e.stream_id.clone())).or_insert(0);
        assert_eq!(e.version, *last + 1, "{}/{} in commit-safe order", e.stream_type, e.stream_id);
        *last = e.version;
    }
    let heads: i64 = shared.iter().map(|s| seen[&(s.stream_type.clone(), s.stream_id.clone())]).sum();
    assert_eq!(heads, 12 * 24, "every writer's every append to a shared stream landed, once");
    let report = parley_replay::verify(store.pool(), None, &[]).await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    t.finish().await;
}

/// Given a stream at version 1; when eight writers append one event each at version 1 without
/// a transaction, then one wins and the others are told the stream is at 2; and a new stream
/// raced the same way is written by one writer only.
#[tokio::test]
async fn one_event_appends_without_a_transaction_name_the_real_version_when_refused() {
    let t = TestApp::new().await;
    let store = &t.app.store;
    let stream = StreamKey::new("Thing", "x");
    store.append(&append(&stream, 0, 1)).await.unwrap();
    for (expected, n, actual) in [(1, 1, 2), (0, 2, 2)] {
        let stream = if expected == 0 { StreamKey::new("Thing", "new") } else { stream.clone() };
        let results = futures::future::join_all((0..8).map(|_| {
            let (store, batch) = (store.clone(), append(&stream, expected, n));
            async move { store.append(&batch).await }
        }))
        .await;
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert!(
                matches!(r, StoreError::WrongExpectedVersion { expected: e, actual: a, .. } if *e == expected && *a == actual),
                "{r:?}"
            );
        }
    }
    t.finish().await;
}
