//! The test harness: a fresh PostgreSQL database per test, cloned from a template that holds
//! the migrated schema (so each test starts in milliseconds), and typed helpers over the app.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod actioncable;
pub mod browser;
pub mod cluster;
pub mod node;
pub mod receiver;
pub mod server;

use std::str::FromStr;
use std::time::Duration;

use parley_aggregates::permissions::{permissions_of, OWNER};
use parley_api::{App, Config};
use parley_commands::password::PasswordHasher;
use parley_commands::services::{Registered, Registration};
use parley_commands::{Actor, CommandContext};
use parley_eventstore::{LogCursor, Metadata, NewEvent, StreamAppend, StreamKey};
use parley_projections::LeaseOptions;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The server tests run against: `DATABASE_URL`'s server (its database name is ignored).
pub fn server_options() -> PgConnectOptions {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    PgConnectOptions::from_str(&url).expect("DATABASE_URL is a valid PostgreSQL URL").database("postgres")
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// A database holding the current migrations, named after their checksums.
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let mut h = Sha256::new();
            for m in parley_migrations::MIGRATOR.iter() {
                h.update(m.version.to_le_bytes());
                h.update(&m.checksum);
            }
            let name = format!("parley_tmpl_{}", &hex::encode(h.finalize())[..16]);
            let mut admin =
                PgConnection::connect_with(&server_options()).await.expect("connect to PostgreSQL");
            // Creating the template is serialized across test processes.
            sqlx::query("SELECT pg_advisory_lock(hashtext('parley-test-template'))")
                .execute(&mut admin)
                .await
                .unwrap();
            let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(&name)
                .fetch_optional(&mut admin)
                .await
                .unwrap();
            if exists.is_none() {
                let building = format!("{name}_building");
                sqlx::query(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                sqlx::query(&format!("CREATE DATABASE {building}")).execute(&mut admin).await.unwrap();
                let mut conn =
                    PgConnection::connect_with(&server_options().database(&building)).await.unwrap();
                parley_migrations::MIGRATOR.run(&mut conn).await.expect("migrations run");
                conn.close().await.unwrap();
                sqlx::query(&format!("ALTER DATABASE {building} RENAME TO {name}"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
            }
            sqlx::query("SELECT pg_advisory_unlock(hashtext('parley-test-template'))")
                .execute(&mut admin)
                .await
                .unwrap();
            admin.close().await.unwrap();
            name
        })
        .await
}

/// A fresh, migrated database of its own.
pub struct TestDb {
    pub name: String,
    pub options: PgConnectOptions,
}

impl TestDb {
    pub async fn new() -> Self {
        let template = template().await;
        let name = format!("parley_test_{}", Uuid::now_v7().simple());
        let mut admin = PgConnection::connect_with(&server_options()).await.expect("connect to PostgreSQL");
        let create = format!("CREATE DATABASE {name} TEMPLATE {template}");
        // Cloning fails while another session is connected to the template: retry briefly.
        let mut tries = 0;
        while let Err(e) = sqlx::query(&create).execute(&mut admin).await {
            tries += 1;
            assert!(tries < 50, "could not create {name}: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        admin.close().await.unwrap();
        let options = server_options().database(&name).application_name("parley-test");
        Self { name, options }
    }

    pub fn url(&self) -> String {
        self.options.to_url_lossy().to_string()
    }

    pub async fn pool(&self, max: u32) -> PgPool {
        PgPoolOptions::new().max_connections(max).connect_with(self.options.clone()).await.unwrap()
    }

    /// Drops the database (tests call it at the end; `scripts/test` sweeps any left behind).
    pub async fn drop_db(self) {
        if let Ok(mut admin) = PgConnection::connect_with(&server_options()).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
                .execute(&mut admin)
                .await;
            let _ = admin.close().await;
        }
    }
}

/// The whole application over a fresh database.
pub struct TestApp {
    pub db: TestDb,
    pub app: App,
    /// The configuration the app was made with; servers start from it.
    pub config: Config,
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with_pool(10).await
    }

    pub async fn with_pool(pool_size: u32) -> Self {
        Self::with_config(pool_size, |_| {}).await
    }

    /// An app whose configuration `adjust` changes first.
    pub async fn with_config(pool_size: u32, adjust: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new().await;
        let mut config = Config::new(db.url());
        config.pool_size = pool_size;
        // Webhook receivers in tests listen on loopback.
        config.webhooks_allow_private = true;
        adjust(&mut config);
        let app =
            App::connect_with(&config, false, PasswordHasher::fast_insecure()).await.expect("app connects");
        Self { db, app, config }
    }

    /// Lease options that react quickly, for tests of hand-over.
    pub fn fast_lease(&self) -> LeaseOptions {
        let mut o = self.app.lease_options();
        o.retry_every = Duration::from_millis(100);
        o.check_every = Duration::from_millis(50);
        o
    }

    /// Registers a new account; returns its owner's context.
    pub async fn owner(&self, email: &str) -> (CommandContext, Registered) {
        let r = self
            .app
            .commands
            .register(Registration {
                name: "Owner".into(),
                email: email.into(),
                password: "correct horse battery".into(),
                account_name: Some("Acme".into()),
                ..Default::default()
            })
            .await
            .expect("registration succeeds");
        (user_context(&r), r)
    }

    /// Appends `count` synthetic `MessagePosted` events to `conversation`, `per_append` at a time.
    pub async fn append_messages(
        &self,
        account_id: Uuid,
        conversation: Uuid,
        count: usize,
        per_append: usize,
    ) {
        let stream = StreamKey::new("Conversation", conversation.to_string());
        let mut version = self.app.store.read_stream(&stream, 0, None).await.unwrap().len() as i64;
        let mut left = count;
        while left > 0 {
            let n = left.min(per_append);
            let events = (0..n)
                .map(|i| {
                    let message_id = Uuid::now_v7();
                    NewEvent::new(
                        "MessagePosted",
                        1,
                        json!({"message_id": message_id, "conversation_id": conversation,
                               "author_id": Uuid::nil(), "body": format!("message {}", version + i as i64 + 1)}),
                    )
                })
                .collect();
            let append = StreamAppend {
                account_id,
                stream: stream.clone(),
                expected_version: version,
                events,
                metadata: Metadata::system(),
            };
            self.app.store.append(&append).await.unwrap();
            version += n as i64;
            left -= n;
        }
    }

    /// Waits until every committed event is readable in commit-safe order. Open transactions
    /// anywhere in the cluster (other tests' databases included) hold readers back for a moment;
    /// tests that read right after writing wait for that, as clients do with `X-Min-Position`.
    pub async fn settle(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.app.store.events_behind_horizon().await.unwrap() {
            assert!(std::time::Instant::now() < deadline, "events stayed behind the horizon");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The cursor of the newest committed event, once it is readable.
    pub async fn head(&self) -> LogCursor {
        self.settle().await;
        self.app.store.head().await.unwrap()
    }

    pub async fn finish(self) {
        self.app.store.pool().close().await;
        self.db.drop_db().await;
    }
}

/// The context of a registered user acting with their roles' permissions.
pub fn user_context(r: &Registered) -> CommandContext {
    CommandContext::new(r.account_id, Actor::user(r.user_id, permissions_of(&r.roles)))
}

/// An owner's context for `user_id` in `account_id`.
pub fn owner_context(account_id: Uuid, user_id: Uuid) -> CommandContext {
    CommandContext::new(account_id, Actor::user(user_id, permissions_of(&[OWNER.into()])))
}

/// Every row of a table (or view) as JSON, in a stable order, for comparing read models.
pub async fn dump(pool: &PgPool, relation: &str) -> serde_json::Value {
    let sql =
        format!("SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]') FROM {relation} t");
    let (v,): (serde_json::Value,) = sqlx::query_as(&sql).fetch_one(pool).await.unwrap();
    v
}

/// Asserts two dumps hold the same rows; on failure names the counts and the first difference
/// instead of printing thousands of rows.
#[track_caller]
pub fn assert_same_rows(left: &serde_json::Value, right: &serde_json::Value, what: &str) {
    let (l, r) =
        (left.as_array().cloned().unwrap_or_default(), right.as_array().cloned().unwrap_or_default());
    if l == r {
        return;
    }
    let first = l.iter().zip(r.iter()).position(|(a, b)| a != b);
    let detail = match first {
        Some(i) => format!("first difference at row {i}:\n  left:  {}\n  right: {}", l[i], r[i]),
        None => "one is a prefix of the other".into(),
    };
    panic!("{what}: {} rows vs {} rows; {detail}", l.len(), r.len());
}
