//! Everything a Parley process holds: the pool, the log, the write side and the read side.

use parley_commands::password::PasswordHasher;
use parley_commands::services::Commands;
use parley_commands::Dispatcher;
use parley_eventstore::{db, EventStore, Upcasters};
use parley_projections::{LeaseOptions, Projections};
use sqlx::postgres::PgConnectOptions;

use crate::config::Config;

#[derive(Clone)]
pub struct App {
    pub store: EventStore,
    pub commands: Commands,
    pub projections: Projections,
    pub connect: PgConnectOptions,
}

impl App {
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
        let connect = db::connect_options(&config.database_url, "parley")?;
        db::create_database_if_missing(&connect).await?;
        let pool = db::pool(connect.clone(), config.pool_size).await?;
        if migrate {
            parley_migrations::MIGRATOR.run(&pool).await?;
        }
        let store = EventStore::new(pool, Upcasters::default());
        let commands = Commands::new(Dispatcher::new(store.clone()), passwords);
        Ok(Self { store, commands, projections: Projections::standard(), connect })
    }

    /// How this process's projection runners take their leases.
    pub fn lease_options(&self) -> LeaseOptions {
        LeaseOptions::new(self.connect.clone())
    }
}
