//! The `parley` command line (API.md, "CLI").

mod analytics;
mod demo;
mod jobs;
mod projections;
mod replay;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::App;
use crate::config::Config;
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

pub async fn main() -> ExitCode {
    let cli = Cli::parse();
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
            let app = App::connect(&config, !no_migrate).await?;
            serve(app, &config).await?;
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
        Command::Demo { rate } => {
            let app = App::connect(&cli.config, true).await?;
            demo::run(app, &cli.config, rate).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Analytics(command) => {
            let app = App::connect(&cli.config, true).await?;
            analytics::run(&app, command).await
        }
    }
}

/// Serves until Ctrl-C or SIGTERM, then shuts down gracefully (the workers give their leases to
/// other nodes).
pub async fn serve(app: App, config: &Config) -> anyhow::Result<()> {
    let server = Server::start(app, config).await?;
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
