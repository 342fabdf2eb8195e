//! `parley serve` as an operator starts it: the real binary, configured only through its
//! environment, on a database of its own that it creates and migrates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The PostgreSQL server the tests use (`DATABASE_URL`; its database name is ignored).
fn server() -> PgConnectOptions {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    PgConnectOptions::from_str(&url).expect("DATABASE_URL parses").database("postgres")
}

/// A running `parley serve` and the address it listens on (from its own log).
struct Served {
    child: Child,
    addr: String,
    database: String,
}

impl Served {
    async fn start(env: &[(&str, &str)]) -> Self {
        let database = format!("parley_test_{}", uuid::Uuid::now_v7().simple());
        let url = server().database(&database).to_url_lossy().to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
            .arg("serve")
            .env("DATABASE_URL", url)
            .env("PARLEY_BIND", "127.0.0.1:0")
            .env("PARLEY_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("parley starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                if entry["message"] == "parley is listening" {
                    return entry["addr"].as_str().unwrap().to_owned();
                }
            }
            panic!("parley exited before listening");
        })
        .await
        .expect("parley listens within a minute");
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, addr, database }
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
        let mut admin = PgConnection::connect_with(&server()).await.unwrap();
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database);
        sqlx::query(&drop).execute(&mut admin).await.unwrap();
    }
}

#[tokio::test]
async fn parley_serve_takes_its_login_rate_limit_from_the_environment() {
    let served =
        Served::start(&[("PARLEY_AUTH_RATE_PER_MINUTE", "3"), ("PARLEY_JWT_SECRET", "serve-test-secret")])
            .await;
    let http = reqwest::Client::new();
    let ready = http.get(format!("http://{}/ready", served.addr)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let answer = http
            .post(format!("http://{}/api/v1/auth/login", served.addr))
            .json(&serde_json::json!({"email": "nobody@example.com", "password": "not the password"}))
            .send()
            .await
            .unwrap();
        statuses.push(answer.status().as_u16());
        if answer.status() == 429 {
            assert!(answer.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(statuses, [401, 401, 401, 429], "three requests to /auth/* a minute, then 429");
    served.stop().await;
}
