//! The one configuration of a Parley process (API.md, "Running"), layered: the defaults here,
//! then the environment, then flags (clap applies both, in that order). `parley serve`, the tests
//! and the benchmark all start a server from a [`Config`], so a setting cannot be parsed in one
//! place and ignored in another. Secrets are [`Secret`]s: they never print.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/parley";
pub const DEFAULT_BIND: &str = "127.0.0.1:3001";
pub const DEFAULT_POOL_SIZE: u32 = 20;
pub const DEFAULT_AUTH_PER_MINUTE: u32 = 60;
pub const DEFAULT_FAILED_LOGINS: u32 = 10;
pub const DEFAULT_API_PER_MINUTE: u32 = 600;
/// Events the live feed keeps for slow WebSocket connections before they catch up from the store.
pub const DEFAULT_LIVE_CAPACITY: usize = 4096;
pub const DEFAULT_JOB_CONCURRENCY: usize = 50;
pub const DEFAULT_REPLICA_MAX_LAG_SECONDS: f64 = 5.0;

#[derive(Clone, Debug, Args)]
pub struct Config {
    /// PostgreSQL connection string; the database is created if missing.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true, global = true)]
    pub database_url: Secret,
    /// A streaming replica of the database: queries (`GET`) read there while it answers and is
    /// at most `PARLEY_REPLICA_MAX_LAG_SECONDS` behind, the primary otherwise.
    #[arg(long, env = "DATABASE_REPLICA_URL", hide_env_values = true, global = true)]
    pub database_replica_url: Option<Secret>,
    /// How far behind (seconds of replay) the replica may be and still serve queries.
    #[arg(long, env = "PARLEY_REPLICA_MAX_LAG_SECONDS", default_value_t = DEFAULT_REPLICA_MAX_LAG_SECONDS, global = true)]
    pub replica_max_lag_seconds: f64,
    /// Connections in this process's pool.
    #[arg(long, env = "PARLEY_DB_POOL_SIZE", default_value_t = DEFAULT_POOL_SIZE, global = true)]
    pub pool_size: u32,
    /// Where to listen (port 0 picks a free port).
    #[arg(long, env = "PARLEY_BIND", default_value = DEFAULT_BIND, global = true)]
    pub bind: String,
    /// HS256 secret for access tokens; generated once and kept in the database when unset.
    #[arg(long, env = "PARLEY_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<Secret>,
    /// Requests to `/auth/*` allowed per client IP per minute.
    #[arg(long, env = "PARLEY_AUTH_RATE_PER_MINUTE", default_value_t = DEFAULT_AUTH_PER_MINUTE, global = true)]
    pub auth_per_minute: u32,
    /// Requests to `/api/v1` allowed per user (access token) or API key per minute, counted
    /// across all nodes (each node shares its counts through the database once a second).
    #[arg(long, env = "PARLEY_API_RATE_PER_MINUTE", default_value_t = DEFAULT_API_PER_MINUTE, global = true)]
    pub api_rate_per_minute: u32,
    /// Browser origins allowed to call the API (CORS), comma-separated, e.g.
    /// `https://app.example.com,https://admin.example.com`; empty: no CORS headers at all.
    #[arg(long, env = "PARLEY_ALLOWED_ORIGINS", value_delimiter = ',', global = true)]
    pub allowed_origins: Vec<String>,
    /// Failed logins allowed per email per 15 minutes.
    #[arg(long, env = "PARLEY_FAILED_LOGINS_PER_EMAIL", default_value_t = DEFAULT_FAILED_LOGINS, global = true)]
    pub failed_logins: u32,
    /// Events the live feed keeps for slow WebSocket connections before they catch up from the
    /// store.
    #[arg(long, env = "PARLEY_LIVE_CAPACITY", default_value_t = DEFAULT_LIVE_CAPACITY, global = true, hide = true)]
    pub live_capacity: usize,
    /// Key that seals webhook secrets at rest (base64 of 32 bytes); generated once and kept in
    /// the database when unset.
    #[arg(long, env = "PARLEY_SECRETS_KEY", hide_env_values = true, global = true)]
    pub secrets_key: Option<Secret>,
    /// Let webhooks reach loopback and private addresses (tests, development only).
    #[arg(long, env = "PARLEY_WEBHOOKS_ALLOW_PRIVATE", default_value_t = false, global = true)]
    pub webhooks_allow_private: bool,
    /// Jobs a node runs at once (webhook deliveries mostly wait on the network).
    #[arg(long, env = "PARLEY_JOB_CONCURRENCY", default_value_t = DEFAULT_JOB_CONCURRENCY, global = true)]
    pub job_concurrency: usize,
    /// How long a call rings before it is missed.
    #[arg(long, env = "PARLEY_CALL_RING_SECONDS", default_value_t = 30, global = true)]
    pub call_ring_seconds: u64,
    /// How long a connection unheard of (its node died) still counts its user online.
    #[arg(long, env = "PARLEY_PRESENCE_TTL_SECONDS", default_value_t = 35, global = true)]
    pub presence_ttl_seconds: u64,
    /// How long a live stream may go without its host connected before it is ended.
    #[arg(long, env = "PARLEY_STREAM_ABANDON_SECONDS", default_value_t = 300, global = true)]
    pub stream_abandon_seconds: u64,
    /// LiveKit API key: the `iss` of stream join tokens (joining answers 503 without it).
    #[arg(long, env = "LIVEKIT_API_KEY", global = true)]
    pub livekit_api_key: Option<String>,
    /// LiveKit API secret: signs stream join tokens (HS256).
    #[arg(long, env = "LIVEKIT_API_SECRET", hide_env_values = true, global = true)]
    pub livekit_api_secret: Option<Secret>,
    /// The LiveKit server's URL, handed to clients with their join token.
    #[arg(long, env = "LIVEKIT_URL", global = true)]
    pub livekit_url: Option<String>,
    /// Stripe's webhook signing secret (`whsec_...`): checkout webhooks answer 401 without it.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true, global = true)]
    pub stripe_webhook_secret: Option<Secret>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "PARLEY_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: String,
    /// `serve` and `demo`: run a private PostgreSQL cluster (machine's server programs, Unix
    /// socket only) in the data folder. On by default when DATABASE_URL is unset and nothing
    /// answers at 127.0.0.1:5432; `false` turns that off.
    #[arg(
        long,
        env = "PARLEY_EMBEDDED_POSTGRES",
        global = true,
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub embedded_postgres: bool,
    /// Parley's data folder (the private cluster lives in its `postgres` folder); default
    /// `$XDG_DATA_HOME/parley` or `$HOME/.local/share/parley`.
    #[arg(long, env = "PARLEY_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Run the projection workers in this process (`parley serve --no-workers` clears it).
    #[arg(skip = true)]
    pub workers: bool,
    /// True when `database_url` is the default (neither DATABASE_URL nor `--database-url`): only
    /// then may a private cluster replace it unasked. The command line sets it; a `Config` built
    /// in code names its database.
    #[arg(skip)]
    pub database_url_defaulted: bool,
    /// True when neither PARLEY_EMBEDDED_POSTGRES nor `--embedded-postgres` was given.
    #[arg(skip)]
    pub embedded_postgres_defaulted: bool,
}

impl Config {
    /// The defaults, on `database_url`.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: Secret::new(database_url),
            pool_size: DEFAULT_POOL_SIZE,
            database_replica_url: None,
            replica_max_lag_seconds: DEFAULT_REPLICA_MAX_LAG_SECONDS,
            bind: DEFAULT_BIND.into(),
            jwt_secret: None,
            secrets_key: None,
            webhooks_allow_private: false,
            job_concurrency: DEFAULT_JOB_CONCURRENCY,
            call_ring_seconds: 30,
            presence_ttl_seconds: 35,
            stream_abandon_seconds: 300,
            livekit_api_key: None,
            livekit_api_secret: None,
            livekit_url: None,
            stripe_webhook_secret: None,
            auth_per_minute: DEFAULT_AUTH_PER_MINUTE,
            failed_logins: DEFAULT_FAILED_LOGINS,
            api_rate_per_minute: DEFAULT_API_PER_MINUTE,
            allowed_origins: Vec::new(),
            live_capacity: DEFAULT_LIVE_CAPACITY,
            log_format: "text".into(),
            embedded_postgres: false,
            data_dir: None,
            workers: true,
            database_url_defaulted: false,
            embedded_postgres_defaulted: false,
        }
    }
}

/// A value that must not appear in logs or error messages: its `Debug` and `Display` say
/// `[redacted]`; [`Secret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn secrets_never_print() {
        let mut config = Config::new("postgres://parley:hunter2@db/parley");
        config.jwt_secret = Some(Secret::new("very-secret"));
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2") && !printed.contains("very-secret"), "{printed}");
    }

    #[test]
    fn flags_are_read_over_the_defaults() {
        let cli = Cli::parse_from(["parley", "--auth-per-minute", "3", "--bind", "127.0.0.1:0"]);
        assert_eq!(cli.config.auth_per_minute, 3);
        assert_eq!(cli.config.bind, "127.0.0.1:0");
        assert_eq!(cli.config.failed_logins, DEFAULT_FAILED_LOGINS);
        assert!(cli.config.workers);
        assert_eq!(cli.config.api_rate_per_minute, DEFAULT_API_PER_MINUTE);
        assert!(cli.config.allowed_origins.is_empty());
    }

    #[test]
    fn the_api_limit_and_the_origins_are_read_from_flags() {
        let cli = Cli::parse_from([
            "parley",
            "--api-rate-per-minute",
            "5",
            "--allowed-origins",
            "https://app.example.com,https://admin.example.com",
        ]);
        assert_eq!(cli.config.api_rate_per_minute, 5);
        assert_eq!(cli.config.allowed_origins, ["https://app.example.com", "https://admin.example.com"]);
    }
}
