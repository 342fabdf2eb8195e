//! Everything a Parley process holds: the pool, the log, the write side, the read side and the
//! job queue.

use std::sync::Arc;

use parley_commands::calls::Calls;
use parley_commands::creator::Creator;
use parley_commands::password::PasswordHasher;
use parley_commands::services::Commands;
use parley_commands::webhooks::{SecretBox, Webhooks};
use parley_commands::Dispatcher;
use parley_eventstore::{db, EventStore, Upcasters};
use parley_jobs::{JobQueue, SystemClock};
use parley_projections::{LeaseOptions, Projections};
use sqlx::postgres::PgConnectOptions;

use crate::config::{Config, Secret};

#[derive(Clone)]
pub struct App {
    pub store: EventStore,
    pub commands: Commands,
    pub projections: Projections,
    /// The durable job queue, on the same pool.
    pub jobs: JobQueue,
    pub webhooks: Webhooks,
    pub calls: Calls,
    pub creator: Creator,
    pub connect: PgConnectOptions,
    /// Jobs this process's worker runs at once.
    pub job_concurrency: usize,
    /// A streaming replica queries read from (`DATABASE_REPLICA_URL`).
    pub replica: Option<crate::replica::Replica>,
}

impl App {
    /// What rebuilds projections as jobs.
    pub fn rebuilds(&self) -> crate::rebuilds::Rebuilds {
        crate::rebuilds::Rebuilds {
            store: self.store.clone(),
            projections: self.projections.clone(),
            lease: self.lease_options(),
        }
    }

    /// What seals days of analytics.
    pub fn sealer(&self) -> crate::analytics::Sealer {
        crate::analytics::Sealer { store: self.store.clone(), commands: self.commands.clone() }
    }

    /// Connects (creating the database if missing) and, unless `migrate` is false, brings the
    /// schema up to date.
    pub async fn connect(config: &Config, migrate: bool) -> anyhow::Result<Self> {
        Self::connect_with(config, migrate, PasswordHasher::default()).await
    }

    pub async fn connect_with(
        config: &Config,
        migrate: bool,
        passwords: PasswordHasher,
    ) -> anyhow::Result<Self> {
        let connect = db::connect_options(config.database_url.expose(), "parley")
            .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a PostgreSQL connection string: {e}"))?;
        db::create_database_if_missing(&connect).await.map_err(|e| unreachable(&connect, &e))?;
        let pool =
            db::pool(connect.clone(), config.pool_size).await.map_err(|e| unreachable(&connect, &e))?;
        if migrate {
            parley_migrations::MIGRATOR.run(&pool).await?;
        }
        let jobs = JobQueue::new(pool.clone(), Arc::new(SystemClock));
        let store = EventStore::new(pool, Upcasters::default());
        let commands = Commands::new(Dispatcher::new(store.clone()), passwords);
        let secrets = SecretBox::load(store.pool(), config.secrets_key.as_ref().map(Secret::expose))
            .await
            .map_err(|e| anyhow::anyhow!("cannot load the secrets key: {e}"))?;
        let webhooks = Webhooks::new(commands.clone(), jobs.clone(), secrets, config.webhooks_allow_private);
        let job_concurrency = config.job_concurrency.max(1);
        let ring = std::time::Duration::from_secs(config.call_ring_seconds.max(1));
        let calls = Calls::new(commands.clone(), jobs.clone(), ring);
        let abandon = std::time::Duration::from_secs(config.stream_abandon_seconds.max(1));
        let creator = Creator::new(commands.clone(), jobs.clone(), abandon);
        let replica = match &config.database_replica_url {
            Some(url) => Some(crate::replica::Replica::connect(
                url.expose(),
                config.pool_size,
                std::time::Duration::from_secs_f64(config.replica_max_lag_seconds.max(0.0)),
            )?),
            None => None,
        };
        Ok(Self {
            store,
            commands,
            projections: Projections::standard(),
            jobs,
            webhooks,
            calls,
            creator,
            connect,
            job_concurrency,
            replica,
        })
    }

    /// How this process's projection runners take their leases.
    pub fn lease_options(&self) -> LeaseOptions {
        LeaseOptions::new(self.connect.clone())
    }
}

/// The error of a database that cannot be reached, naming where Parley looked and what to do.
fn unreachable(options: &PgConnectOptions, cause: &sqlx::Error) -> anyhow::Error {
    let database = options.get_database().unwrap_or("postgres");
    let at = match options.get_socket() {
        Some(socket) => format!("the Unix socket in {}", socket.display()),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    anyhow::anyhow!(
        "cannot use PostgreSQL database {database:?} at {at}: {cause}\n\
         Parley keeps everything in a PostgreSQL server (15 or newer). Start one there, point \
         DATABASE_URL at one (postgres://user@host:port/database), run `parley serve \
         --embedded-postgres` for a private cluster in Parley's data folder, or run `scripts/run`, \
         which starts the local cluster or installs Debian's `postgresql` package first."
    )
}
