//! Typed configuration, from flags and the environment (API.md, "Running").

use clap::Args;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/parley";

#[derive(Clone, Debug, Args)]
pub struct Config {
    /// PostgreSQL connection string; the database is created if missing.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    pub database_url: String,
    /// Connections in this process's pool.
    #[arg(long, env = "PARLEY_DB_POOL_SIZE", default_value_t = 20, global = true)]
    pub pool_size: u32,
    /// Where to listen.
    #[arg(long, env = "PARLEY_BIND", default_value = "127.0.0.1:3001", global = true)]
    pub bind: String,
    /// HS256 secret for access tokens; generated once and kept in the database when unset.
    #[arg(long, env = "PARLEY_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,
    /// Requests to `/auth/*` allowed per client IP per minute.
    #[arg(long, env = "PARLEY_AUTH_RATE_PER_MINUTE", default_value_t = 60, global = true)]
    pub auth_per_minute: u32,
    /// Failed logins allowed per email per 15 minutes.
    #[arg(long, env = "PARLEY_FAILED_LOGINS_PER_EMAIL", default_value_t = 10, global = true)]
    pub failed_logins: u32,
    /// Log format: `text` or `json`.
    #[arg(long, env = "PARLEY_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: String,
}

impl Config {
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            pool_size: 20,
            bind: "127.0.0.1:3001".into(),
            jwt_secret: None,
            auth_per_minute: 60,
            failed_logins: 10,
            log_format: "text".into(),
        }
    }
}
