//! The `parley` command line (API.md, "CLI").

mod analytics;
mod demo;
mod jobs;
mod keys;
mod projections;
mod replay;

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::app::App;
use crate::config::{Config, Secret};
use crate::embedded_postgres::{self, PrivateCluster};
use crate::http::Server;
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(name = "parley", version, about = "Event-sourced team chat and calls backend")]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: HTTP + WebSocket API and, unless --no-workers, the projection workers.
    Serve {
        /// Serve requests only; run no projection workers.
        #[arg(long)]
        no_workers: bool,
        /// Do not run migrations at start.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Run migrations and exit.
    Migrate,
    /// Inspect and rebuild projections.
    #[command(subcommand)]
    Projections(projections::ProjectionsCommand),
    /// Read and verify the log.
    #[command(subcommand)]
    Replay(replay::ReplayCommand),
    /// Inspect the job queue; retry or discard jobs.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// The access-token signing keys: list, rotate, retire.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Seal daily analytics.
    #[command(subcommand)]
    Analytics(analytics::AnalyticsCommand),
    /// Serve a demo account with steady simulated traffic, for trying the dashboard.
    Demo {
        /// Simulated actions per second.
        #[arg(long, default_value_t = 5)]
        rate: u32,
    },
}

impl Cli {
    /// Parses `argv` as [`Parser::parse_from`] does, and notes which settings were left to
    /// their defaults (a private cluster may replace only a database nobody named).
    pub fn parse_noting_defaults<I, T>(argv: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(argv)?;
        let mut cli = Self::from_arg_matches(&matches)?;
        let defaulted = |id: &str| matches!(matches.value_source(id), None | Some(ValueSource::DefaultValue));
        cli.config.database_url_defaulted = defaulted("database_url");
        cli.config.embedded_postgres_defaulted = defaulted("embedded_postgres");
        Ok(cli)
    }
}

pub async fn main() -> ExitCode {
    let cli = Cli::parse_noting_defaults(std::env::args_os()).unwrap_or_else(|e| e.exit());
    telemetry::init(&cli.config.log_format);
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { no_workers, no_migrate } => {
            let mut config = cli.config;
            config.workers = !no_workers;
            let Some(cluster) = unless_interrupted(private_cluster(&mut config)).await? else {
                return Ok(ExitCode::SUCCESS);
            };
            let served = async {
                let Some(app) = unless_interrupted(App::connect(&config, !no_migrate)).await? else {
                    return Ok(());
                };
                serve(app, &config).await
            }
            .await;
            stop_cluster(cluster, served).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            App::connect(&cli.config, true).await?;
            println!("migrations are up to date");
            Ok(ExitCode::SUCCESS)
        }
        Command::Projections(command) => {
            let app = App::connect(&cli.config, true).await?;
            projections::run(&app, command).await
        }
        Command::Replay(command) => {
            let app = App::connect(&cli.config, command.migrates()).await?;
            replay::run(&app, command).await
        }
        Command::Jobs(command) => {
            let app = App::connect(&cli.config, true).await?;
            jobs::run(&app, command).await
        }
        Command::Keys(command) => {
            let app = App::connect(&cli.config, true).await?;
            let configured = cli.config.jwt_secret.as_ref().map(crate::config::Secret::expose);
            keys::run(&app, command, configured).await
        }
        Command::Demo { rate } => {
            let mut config = cli.config;
            let Some(cluster) = unless_interrupted(private_cluster(&mut config)).await? else {
                return Ok(ExitCode::SUCCESS);
            };
            let served = async {
                let Some(app) = unless_interrupted(App::connect(&config, true)).await? else {
                    return Ok(());
                };
                demo::run(app, &config, rate).await
            }
            .await;
            stop_cluster(cluster, served).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Analytics(command) => {
            let app = App::connect(&cli.config, true).await?;
            analytics::run(&app, command).await
        }
    }
}

/// The private PostgreSQL cluster `serve` and `demo` run on, when asked for
/// (`--embedded-postgres`), or unasked when no database was named and nothing answers at the
/// default address; `config` then points at it.
async fn private_cluster(config: &mut Config) -> anyhow::Result<Option<PrivateCluster>> {
    let wanted = if config.embedded_postgres_defaulted {
        config.database_url_defaulted && !embedded_postgres::answers("127.0.0.1:5432").await
    } else {
        config.embedded_postgres
    };
    if !wanted {
        return Ok(None);
    }
    if !config.database_url_defaulted {
        tracing::warn!("DATABASE_URL is ignored: a private PostgreSQL cluster was asked for");
    }
    let data_dir = match &config.data_dir {
        Some(dir) => dir.clone(),
        None => embedded_postgres::default_data_dir()?,
    };
    let cluster = PrivateCluster::start(&data_dir).await?;
    eprintln!("{}", cluster.describe());
    config.database_url = Secret::new(cluster.url());
    Ok(Some(cluster))
}

/// A step of the start (the cluster, connecting and migrating), or `None` when Ctrl-C or SIGTERM
/// comes first: the step is dropped, and a cluster still being started is stopped by
/// [`PrivateCluster`]'s drop once its start returns (the runtime waits for it at exit).
async fn unless_interrupted<T>(
    step: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<Option<T>> {
    tokio::select! {
        done = step => done.map(Some),
        _ = shutdown_signal() => {
            tracing::info!("interrupted while starting");
            Ok(None)
        }
    }
}

/// Stops the private cluster (if any) after the server, whether it served or failed to start,
/// and returns the server's outcome first.
async fn stop_cluster(cluster: Option<PrivateCluster>, served: anyhow::Result<()>) -> anyhow::Result<()> {
    let stopped = match cluster {
        Some(cluster) => cluster.stop().await,
        None => Ok(()),
    };
    served?;
    stopped
}

/// Serves until Ctrl-C or SIGTERM, then shuts down gracefully (the workers give their leases to
/// other nodes).
pub async fn serve(app: App, config: &Config) -> anyhow::Result<()> {
    let server = Server::start(app, config).await?;
    let base = format!("http://{}", server.addr);
    eprintln!("parley: serving {base} (API docs {base}/docs, dashboard {base}/dashboard); Ctrl-C stops");
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.stop().await;
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_named_anywhere_is_not_replaced_by_a_private_cluster() {
        // The test process may have DATABASE_URL set; only flags are checked here then.
        let unset = std::env::var_os("DATABASE_URL").is_none();
        let cli = Cli::parse_noting_defaults(["parley", "serve"]).unwrap();
        assert_eq!(cli.config.database_url_defaulted, unset);
        for argv in [
            &["parley", "serve", "--database-url", "postgres://x@h/d"][..],
            &["parley", "--database-url", "postgres://x@h/d", "serve"][..],
        ] {
            let cli = Cli::parse_noting_defaults(argv).unwrap();
            assert!(!cli.config.database_url_defaulted, "{argv:?}");
        }
        if std::env::var_os("PARLEY_EMBEDDED_POSTGRES").is_none() {
            let cli = Cli::parse_noting_defaults(["parley", "serve"]).unwrap();
            assert!(cli.config.embedded_postgres_defaulted);
        }
        let cli = Cli::parse_noting_defaults(["parley", "demo", "--embedded-postgres"]).unwrap();
        assert!(cli.config.embedded_postgres && !cli.config.embedded_postgres_defaulted);
    }
}
