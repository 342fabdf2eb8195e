//! `parley replay export | import`: a portable copy of the log, imported into an empty store,
//! reproduces it (verify passes, every read endpoint answers the same, commands decide the same),
//! and a damaged copy is refused with nothing imported.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use parley_api::cli::{run, Cli};
use parley_api::config::Config;
use parley_api::http::routes::endpoints;
use parley_api::http::Server;
use parley_api::App;
use parley_commands::password::PasswordHasher;
use parley_replay::portable::export_to_file;
use parley_tests::server::{serving, TestServer};
use parley_tests::{assert_same_rows, dump, TestApp, TestDb};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::walks::{id_of, World};

fn cli(url: &str, args: &[&str]) -> Cli {
    // Few connections: the server of the test and the one on the copy hold many of PostgreSQL's.
    let mut argv = vec![
        "parley".to_owned(),
        "--database-url".to_owned(),
        url.to_owned(),
        "--pool-size".to_owned(),
        "3".to_owned(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    Cli::try_parse_from(argv).unwrap()
}

/// A scratch folder of the test's own.
fn folder() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("parley-portable-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The write side's own rows, without the times they were written at.
const WRITE_SIDE: &[&str] = &[
    "(SELECT kind, value, account_id, owner_stream_type, owner_stream_id FROM claims)",
    "user_facts",
    "message_facts",
    "reaction_facts",
    "invitation_facts",
    "api_key_facts",
    "(SELECT token_hash, session_id, account_id, user_id FROM session_tokens)",
    "(SELECT subscription_id, account_id, url, event_types, enabled FROM webhook_routes)",
];

/// The log without its transaction ids (an import's events carry the importing transaction's).
const LOG: &str = "(SELECT position, event_id, account_id, stream_type, stream_id, version, event_type, \
                    schema_version, payload, metadata, recorded_at, prev_hash, hash FROM events)";

/// Waits until the log has not grown for a moment (process managers append after requests).
async fn quiet(pool: &PgPool) -> i64 {
    let mut last = -1;
    loop {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM events").fetch_one(pool).await.unwrap();
        if n == last {
            return n;
        }
        last = n;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}

/// Log cursors in an answer reduced to their position: `<transaction>_<position>` differs after
/// an import (the importing transaction's id), the position does not.
fn without_transaction_ids(v: &mut Value) {
    match v {
        Value::String(s) => {
            if let Some((tx, pos)) = s.split_once('_') {
                let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
                if digits(tx) && digits(pos) {
                    *s = format!("_{pos}");
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(without_transaction_ids),
        Value::Object(map) => map.values_mut().for_each(without_transaction_ids),
        _ => {}
    }
}

/// GET endpoints whose answers are not derived from the log, and why they are left out.
fn outside_the_log(path: &str) -> bool {
    // A WebSocket; process metrics; the job queue and projection runtime state (operational
    // state, not exported); webhook delivery attempts (a record of calls made, not events); the
    // API's description of itself and its page.
    path == "/api/v1/cable"
        || path == "/api/v1/openapi.json"
        || path.starts_with("/docs")
        || path == "/metrics"
        || path.starts_with("/api/v1/admin/jobs")
        || path.starts_with("/api/v1/admin/projections")
        || path.ends_with("/attempts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_log_verifies_and_answers_every_read_endpoint_as_the_original_did() {
    // Given an account with one of every resource, edits, a deleted message, a taken-back
    // reaction and a direct conversation
    // (its ringing call rings for an hour: the comparison below must not race its timer on a
    // loaded machine)
    let w = World::on(TestServer::start_with(|config| config.call_ring_seconds = 3600).await).await;
    let s = &w.s;
    let messages = format!("/api/v1/conversations/{}/messages", w.group);
    let edited = s
        .call(
            Method::PATCH,
            &format!("{messages}/{}", w.message),
            Some(&w.owner.token),
            Some(json!({"body": "hi, edited"})),
            &[],
        )
        .await;
    assert!(edited.status.is_success(), "{:?}", edited.body);
    let doomed = id_of(&s.post(&messages, &w.member.token, json!({"body": "to be deleted"})).await);
    let deleted =
        s.call(Method::DELETE, &format!("{messages}/{doomed}"), Some(&w.member.token), None, &[]).await;
    assert!(deleted.status.is_success(), "{:?}", deleted.body);
    let taken_back = id_of(
        &s.post("/api/v1/reactions", &w.owner.token, json!({"message_id": w.message, "emoji": "🎉"})).await,
    );
    let removed = s
        .call(Method::DELETE, &format!("/api/v1/reactions/{taken_back}"), Some(&w.owner.token), None, &[])
        .await;
    assert!(removed.status.is_success(), "{:?}", removed.body);
    let direct = s
        .post(
            "/api/v1/conversations",
            &w.owner.token,
            json!({"kind": "direct", "member_ids": [w.newcomer.id]}),
        )
        .await;
    assert_eq!(direct.status, 201, "{:?}", direct.body);
    s.post(
        &format!("/api/v1/conversations/{}/messages", id_of(&direct)),
        &w.newcomer.token,
        json!({"body": "psst"}),
    )
    .await;
    // A call left ringing, so that the group has an active call.
    let ringing = id_of(
        &s.post(
            &format!("/api/v1/conversations/{}/calls", w.group),
            &w.member.token,
            json!({"kind": "video"}),
        )
        .await,
    );
    s.rung(&ringing).await;
    let source = s.t.app.store.pool();
    let count = quiet(source).await;

    // When it is exported and imported into an empty database with the CLI
    let dir = folder();
    let file = dir.join("log.jsonl");
    let file_arg = file.to_str().unwrap();
    assert_eq!(
        run(cli(&s.t.db.url(), &["replay", "export", "--out", file_arg])).await.unwrap(),
        ExitCode::SUCCESS
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["format"], "parley-log");
    assert_eq!(header["version"], 1);
    assert_eq!(header["events"], json!(count));
    assert_eq!(text.lines().count() as i64, count + 1);
    let target = TestDb::new().await;
    assert_eq!(run(cli(&target.url(), &["replay", "import", file_arg])).await.unwrap(), ExitCode::SUCCESS);

    // Then the imported log verifies, holds the same events and the same write-side rows
    assert_eq!(run(cli(&target.url(), &["replay", "verify"])).await.unwrap(), ExitCode::SUCCESS);
    let copy = target.pool(5).await;
    assert_same_rows(&dump(source, LOG).await, &dump(&copy, LOG).await, "the log");
    for relation in WRITE_SIDE {
        assert_same_rows(&dump(source, relation).await, &dump(&copy, relation).await, relation);
    }

    // And a server on it, once its projections caught up, answers every read endpoint the same
    let mut config = serving(Config::new(target.url()));
    config.webhooks_allow_private = true;
    config.pool_size = 8;
    let app = App::connect_with(&config, false, PasswordHasher::fast_insecure()).await.unwrap();
    let server = Server::start(app.clone(), &config).await.unwrap();
    let base = format!("http://{}", server.addr);
    let source_head = s.t.head().await.to_string();
    let (last,): (i64,) = sqlx::query_as("SELECT max(position) FROM events").fetch_one(&copy).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let target_head = loop {
        match app.store.head().await {
            Ok(head) if head.position == last => break head.to_string(),
            _ => {}
        }
        assert!(std::time::Instant::now() < deadline, "the imported log never became readable");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (mut compared, mut found) = (0, 0);
    for e in endpoints().into_iter().filter(|e| e.method == Method::GET && !outside_the_log(&e.path)) {
        let mut path = w.path(&e.path);
        if e.path == "/api/v1/analytics/users" {
            path.push_str(&format!("?date={}", chrono::Utc::now().date_naive()));
        }
        let token = w.token(&e.path);
        let original =
            s.call(Method::GET, &path, Some(token), None, &[("x-min-position", &source_head)]).await;
        // A fresh server builds every read model from the whole imported log: on a loaded machine
        // that can take longer than one read's 5 s wait (503 `projection_lagging`): ask again.
        let patience = std::time::Instant::now() + Duration::from_secs(60);
        let answer = loop {
            let answer = s
                .http
                .get(format!("{base}{path}"))
                .bearer_auth(token)
                .header("x-min-position", &target_head)
                .send()
                .await
                .unwrap();
            if answer.status() != reqwest::StatusCode::SERVICE_UNAVAILABLE
                || std::time::Instant::now() > patience
            {
                break answer;
            }
        };
        let status = original.status;
        assert_eq!(answer.status(), status, "{path}: {:?}", original.body);
        let text = answer.text().await.unwrap();
        let mut imported = serde_json::from_str(&text).unwrap_or(Value::String(text));
        let mut original = original.body;
        without_transaction_ids(&mut original);
        without_transaction_ids(&mut imported);
        assert_eq!(imported, original, "{path} answers differently after the import");
        compared += 1;
        found += usize::from(status.is_success());
    }
    // 26 GET endpoints of the log's read side when this was written, each finding what it shows.
    assert!(
        compared >= 26 && found == compared,
        "every read endpoint: {found} of {compared} answered with success"
    );

    // And commands decide on it as on the original: a taken email stays taken, posts continue
    // after the imported positions
    let again = reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"name": "Again", "email": "owner@example.com", "password": "correct horse battery",
                      "account_name": "Again"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "{}", again.text().await.unwrap());
    let posted = reqwest::Client::new()
        .post(format!("{base}{messages}"))
        .bearer_auth(&w.owner.token)
        .json(&json!({"body": "after the import"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    let (after,): (i64,) = sqlx::query_as("SELECT max(position) FROM events").fetch_one(&copy).await.unwrap();
    assert!(after > last, "new appends continue after the imported positions");

    server.stop().await;
    copy.close().await;
    app.store.pool().close().await;
    target.drop_db().await;
    let _ = std::fs::remove_dir_all(dir);
    w.s.stop().await;
}

/// An account with a group, a direct conversation and messages, through the commands.
async fn history(t: &TestApp) {
    let (owner, _) = t.owner("owner@example.com").await;
    let group = t.app.commands.start_group(&owner, "General", &[]).await.unwrap();
    let id = group.aggregate.id.unwrap();
    for i in 0..6 {
        t.app.commands.post_message(&owner, id, &format!("message {i}")).await.unwrap();
    }
    t.settle().await;
}

/// The lines of `text` changed by `damage`, written next to it.
fn damaged(dir: &std::path::Path, name: &str, text: &str, damage: impl FnOnce(&mut Vec<String>)) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    damage(&mut lines);
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path.to_str().unwrap().to_owned()
}

/// Events and write-side rows in a store.
async fn rows(pool: &PgPool) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM claims) + (SELECT count(*) FROM user_facts) \
              + (SELECT count(*) FROM message_facts) + (SELECT count(*) FROM session_tokens)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    n
}

#[tokio::test]
async fn every_kind_of_damaged_file_is_refused_with_nothing_imported() {
    // Given an exported log
    let t = TestApp::new().await;
    history(&t).await;
    let dir = folder();
    let good = dir.join("good.jsonl");
    export_to_file(t.app.store.pool(), None, &good, &()).await.unwrap();
    let text = std::fs::read_to_string(&good).unwrap();
    let n = text.lines().count();
    assert!(n > 8, "{n} lines");
    let target = TestDb::new().await;
    let copy = target.pool(2).await;
    let line_of = |i: usize| -> Value { serde_json::from_str(text.lines().nth(i).unwrap()).unwrap() };
    // Two neighbouring lines of one stream, and two of different streams.
    let same = (2..n - 1).find(|&i| line_of(i)["stream_id"] == line_of(i + 1)["stream_id"]).unwrap();
    let other = (1..n - 1).find(|&i| line_of(i)["stream_id"] != line_of(i + 1)["stream_id"]).unwrap();
    let posted = (1..n).find(|&i| line_of(i)["event_type"] == "MessagePosted").unwrap();

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "truncated",
            damaged(&dir, "cut.jsonl", &text, |l| {
                let last = l.last_mut().unwrap();
                last.truncate(last.len() / 2);
            }),
            "truncated",
        ),
        (
            "last line removed",
            damaged(&dir, "short.jsonl", &text, |l| {
                l.pop();
            }),
            "its header announces",
        ),
        (
            "a line removed",
            damaged(&dir, "removed.jsonl", &text, |l| {
                l.remove(same);
            }),
            "missing",
        ),
        (
            "a line duplicated",
            damaged(&dir, "extra.jsonl", &text, |l| {
                let copy = l[same].clone();
                l.insert(same, copy);
            }),
            "repeated",
        ),
        (
            "two lines of a stream swapped",
            damaged(&dir, "swapped.jsonl", &text, |l| l.swap(same, same + 1)),
            "version",
        ),
        (
            "two lines of two streams swapped",
            damaged(&dir, "reordered.jsonl", &text, |l| l.swap(other, other + 1)),
            "reordered",
        ),
        (
            "a payload altered",
            damaged(&dir, "altered.jsonl", &text, |l| {
                let mut v: Value = serde_json::from_str(&l[posted]).unwrap();
                v["payload"]["body"] = json!("forged");
                l[posted] = v.to_string();
            }),
            "does not match its hash",
        ),
        (
            "version 2",
            damaged(&dir, "v2.jsonl", &text, |l| {
                l[0] = l[0].replacen("\"version\":1", "\"version\":2", 1);
            }),
            "version 2 is not supported",
        ),
        (
            "another format",
            damaged(&dir, "other.jsonl", &text, |l| {
                l[0] = l[0].replacen("parley-log", "other-log", 1);
            }),
            "not a parley-log file",
        ),
        (
            "a line that is not JSON",
            damaged(&dir, "garbage.jsonl", &text, |l| l[same] = "not json at all".into()),
            "is not a JSON event line",
        ),
        (
            "not JSON lines at all",
            damaged(&dir, "binary.jsonl", "\u{1}\u{2}binary", |_| {}),
            "not a parley-log file",
        ),
    ];
    for (what, file, says) in cases {
        // When it is imported
        let refused = run(cli(&target.url(), &["replay", "import", &file])).await;
        // Then it is refused, saying why in one line, and nothing is imported
        let message = format!("{:#}", refused.expect_err(what));
        assert!(message.contains(says), "{what}: {message}");
        assert!(message.contains("nothing was imported") && !message.contains('\n'), "{what}: {message}");
        assert_eq!(rows(&copy).await, 0, "{what}: nothing was imported");
    }

    // And the intact file imports there, after which a second import is refused
    let good = good.to_str().unwrap();
    assert_eq!(run(cli(&target.url(), &["replay", "import", good])).await.unwrap(), ExitCode::SUCCESS);
    let (imported,): (i64,) = sqlx::query_as("SELECT count(*) FROM events").fetch_one(&copy).await.unwrap();
    assert_eq!(imported as usize, n - 1);
    let again = format!("{:#}", run(cli(&target.url(), &["replay", "import", good])).await.unwrap_err());
    assert!(again.contains("not empty"), "{again}");
    let (still,): (i64,) = sqlx::query_as("SELECT count(*) FROM events").fetch_one(&copy).await.unwrap();
    assert_eq!(still, imported);

    copy.close().await;
    target.drop_db().await;
    let _ = std::fs::remove_dir_all(dir);
    t.finish().await;
}

#[tokio::test]
async fn an_export_to_a_path_that_cannot_be_written_fails_and_leaves_no_file() {
    let t = TestApp::new().await;
    history(&t).await;
    let dir = folder();
    // A folder that does not exist, and a path that is a folder (the rename at the end fails).
    let missing = dir.join("no-such-folder").join("log.jsonl");
    let a_folder = dir.join("taken");
    std::fs::create_dir_all(a_folder.join("inside")).unwrap();
    for path in [&missing, &a_folder] {
        let failed = run(cli(&t.db.url(), &["replay", "export", "--out", path.to_str().unwrap()])).await;
        let message = format!("{:#}", failed.unwrap_err());
        assert!(message.contains("cannot write") && message.contains(path.to_str().unwrap()), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["taken".to_owned()], "no partial file is left");
    assert!(a_folder.join("inside").is_dir());
    let _ = std::fs::remove_dir_all(dir);
    t.finish().await;
}

#[tokio::test]
async fn an_account_export_holds_that_accounts_streams_whole_and_imports_alone() {
    // Given two accounts
    let t = TestApp::new().await;
    history(&t).await;
    let (other, registered) = t.owner("other@example.com").await;
    let group = t.app.commands.start_group(&other, "Elsewhere", &[]).await.unwrap();
    t.app.commands.post_message(&other, group.aggregate.id.unwrap(), "hello").await.unwrap();
    t.settle().await;
    let account = registered.account_id;

    // When one is exported and imported
    let dir = folder();
    let file = dir.join("account.jsonl");
    let file = file.to_str().unwrap();
    let account_arg = account.to_string();
    let exported =
        run(cli(&t.db.url(), &["replay", "export", "--out", file, "--account", &account_arg])).await;
    assert_eq!(exported.unwrap(), ExitCode::SUCCESS);
    let target = TestDb::new().await;
    assert_eq!(run(cli(&target.url(), &["replay", "import", file])).await.unwrap(), ExitCode::SUCCESS);

    // Then the copy holds exactly that account's streams, whole, at their positions
    let of_account = format!("(SELECT position, event_id, hash FROM events WHERE account_id = '{account}')");
    let copy = target.pool(2).await;
    let copied = dump(&copy, &of_account).await;
    assert_same_rows(&dump(t.app.store.pool(), &of_account).await, &copied, "the account's events");
    assert_same_rows(
        &dump(&copy, LOG).await,
        &dump(&copy, &format!("(SELECT * FROM {LOG} l WHERE account_id = '{account}')")).await,
        "nothing else",
    );
    assert_eq!(run(cli(&target.url(), &["replay", "verify"])).await.unwrap(), ExitCode::SUCCESS);
    copy.close().await;
    target.drop_db().await;
    let _ = std::fs::remove_dir_all(dir);
    t.finish().await;
}
