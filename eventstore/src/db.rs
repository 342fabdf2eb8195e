//! Connecting to Postgres: pool options every Parley process uses, and creating the database.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};

/// Connection options for `url`, with the session settings Parley relies on.
///
/// `idle_in_transaction_session_timeout` bounds how long a stuck writer can hold every reader of
/// the log back (DESIGN.md, invariant 2).
pub fn connect_options(url: &str, application_name: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(url)?
        .application_name(application_name)
        .options([("idle_in_transaction_session_timeout", "10s")])
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Debug, Duration::from_millis(500)))
}

/// How long a caller waits for a pooled connection. It bounds how long a request waits while the
/// database restarts or is out of reach (each try to connect is refused or times out within it)
/// before it answers 503, so clients are told to come back instead of hanging.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1500);

/// A pooled connection idle for longer than this is pinged before it is handed out.
///
/// The pool pings every connection when it is given back, so one handed out again soon after
/// was seen alive moments ago: pinging it again (the pool's default, on every acquire) would
/// add a round trip to every command and query. One that sat idle longer may have lost its
/// server (a restart, a timeout) and is pinged first, and replaced if it does not answer.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// A pool of at most `max_connections`.
pub async fn pool(options: PgConnectOptions, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
}

/// Creates the database named in `options` if it does not exist, connecting to the server's
/// `postgres` database to do so.
pub async fn create_database_if_missing(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await?;
    if exists.is_none() {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("CREATE DATABASE {quoted}")).execute(&mut admin).await {
            Ok(_) => {}
            // Another process created it between our check and our create.
            Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P04") => {}
            Err(e) => return Err(e),
        }
    }
    admin.close().await
}
