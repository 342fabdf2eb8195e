//! `parley replay export | import` as an operator runs them: the real binary, its exit code and
//! the one line it prints on stderr when it refuses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;
use std::str::FromStr;

use parley_eventstore::{EventStore, Metadata, NewEvent, StreamAppend, StreamKey, Upcasters};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::process::Command;

/// The PostgreSQL server the tests use (`DATABASE_URL`; its database name is ignored).
fn server() -> PgConnectOptions {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    PgConnectOptions::from_str(&url).expect("DATABASE_URL parses").database("postgres")
}

fn url(database: &str) -> String {
    server().database(database).to_url_lossy().to_string()
}

/// Runs `parley` on `database` with `args`.
async fn parley(database: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(args)
        .env("DATABASE_URL", url(database))
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("parley runs")
}

/// The failure's message: the last line of stderr, the only one that is an error.
fn refusal(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert_eq!(stderr.lines().last(), Some(errors[0]), "{stderr}");
    errors[0].to_owned()
}

async fn drop_databases(names: &[&str]) {
    let mut admin = PgConnection::connect_with(&server()).await.unwrap();
    for name in names {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn the_cli_exports_imports_and_refuses_with_one_line_and_exit_code_1() {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let (source, copy, other) =
        (format!("parley_test_{id}_a"), format!("parley_test_{id}_b"), format!("parley_test_{id}_c"));
    let dir = std::env::temp_dir().join(format!("parley-cli-portable-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("log.jsonl");
    let file_arg = file.to_str().unwrap();

    // Given a log of two streams
    assert!(parley(&source, &["migrate"]).await.status.success());
    let pool = PgPoolOptions::new().max_connections(2).connect(&url(&source)).await.unwrap();
    let store = EventStore::new(pool.clone(), Upcasters::default());
    for (stream, n) in [("a", 3), ("b", 2)] {
        let events = (0..n).map(|i| NewEvent::new("AccountNoted", 1, json!({"n": i}))).collect();
        let append = StreamAppend {
            account_id: uuid::Uuid::nil(),
            stream: StreamKey::new("Account", stream),
            expected_version: 0,
            events,
            metadata: Metadata::system(),
        };
        store.append(&append).await.unwrap();
    }
    pool.close().await;

    // When it is exported, and imported into a database that does not exist yet
    let exported = parley(&source, &["replay", "export", "--out", file_arg]).await;
    assert!(exported.status.success(), "{exported:?}");
    assert!(
        String::from_utf8_lossy(&exported.stdout).contains("exported 5 events of 2 streams"),
        "{exported:?}"
    );
    let imported = parley(&copy, &["replay", "import", file_arg]).await;
    assert!(imported.status.success(), "{imported:?}");
    assert!(
        String::from_utf8_lossy(&imported.stdout).contains("imported 5 events of 2 streams"),
        "{imported:?}"
    );

    // Then the copy verifies, and a second import into it is refused
    assert!(parley(&copy, &["replay", "verify"]).await.status.success());
    let again = refusal(&parley(&copy, &["replay", "import", file_arg]).await);
    assert!(
        again.starts_with("error: import refused, nothing was imported: the target store is not empty"),
        "{again}"
    );

    // And a file of another version is refused, naming the version
    let text = std::fs::read_to_string(&file).unwrap().replacen("\"version\":1", "\"version\":2", 1);
    let v2 = dir.join("v2.jsonl");
    std::fs::write(&v2, text).unwrap();
    let refused = refusal(&parley(&other, &["replay", "import", v2.to_str().unwrap()]).await);
    assert!(refused.contains("parley-log version 2 is not supported"), "{refused}");
    let other_pool = PgPoolOptions::new().max_connections(1).connect(&url(&other)).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM events").fetch_one(&other_pool).await.unwrap();
    assert_eq!(n, 0, "nothing was imported");
    other_pool.close().await;

    // And an export to a folder that does not exist fails without leaving a file
    let nowhere = dir.join("missing").join("log.jsonl");
    let failed = refusal(&parley(&source, &["replay", "export", "--out", nowhere.to_str().unwrap()]).await);
    assert!(failed.starts_with("error: export failed, no file was written: cannot write"), "{failed}");
    assert!(!nowhere.exists());

    drop_databases(&[&source, &copy, &other]).await;
    let _ = std::fs::remove_dir_all(dir);
}
