//! `parley projections list | rebuild`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use comfy_table::Table;
use indicatif::{ProgressBar, ProgressStyle};
use parley_projections::{list, rebuild};

use crate::app::App;

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Show every projection: status, position, lag.
    List,
    /// Rebuild from the log while the live copy serves, then swap.
    Rebuild {
        /// The projection to rebuild.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Rebuild every projection.
        #[arg(long)]
        all: bool,
        /// Ask nothing.
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(app: &App, command: ProjectionsCommand) -> anyhow::Result<ExitCode> {
    match command {
        ProjectionsCommand::List => {
            let mut table = Table::new();
            table.set_header([
                "name",
                "generation",
                "status",
                "position",
                "lag",
                "events",
                "last error",
                "updated",
            ]);
            for s in list(&app.store).await? {
                table.add_row([
                    s.name,
                    s.generation.to_string(),
                    s.status,
                    s.position.to_string(),
                    s.lag.to_string(),
                    s.events_applied.to_string(),
                    s.last_error.unwrap_or_default(),
                    s.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ]);
            }
            println!("{table}");
            Ok(ExitCode::SUCCESS)
        }
        ProjectionsCommand::Rebuild { name, all, yes } => {
            let targets = match (name, all) {
                (_, true) => app.projections.all().to_vec(),
                (Some(name), false) => match app.projections.get(&name) {
                    Some(p) => vec![p],
                    None => anyhow::bail!("no projection named {name:?}"),
                },
                (None, false) => anyhow::bail!("name a projection or pass --all"),
            };
            let names: Vec<&str> = targets.iter().map(|p| p.name()).collect();
            if !yes && std::io::stdin().is_terminal() && !confirm(&names)? {
                println!("nothing rebuilt");
                return Ok(ExitCode::SUCCESS);
            }
            for projection in targets {
                rebuild_one(app, projection).await?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn confirm(names: &[&str]) -> anyhow::Result<bool> {
    eprint!("Rebuild {} from the log? [y/N] ", names.join(", "));
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

async fn rebuild_one(
    app: &App,
    projection: std::sync::Arc<dyn parley_projections::Projection>,
) -> anyhow::Result<()> {
    let name = projection.name();
    let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM events").fetch_one(app.store.pool()).await?;
    let bar = ProgressBar::new(total.max(0) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>14} [{bar:40}] {pos}/{len} events, {per_sec}, ETA {eta} {msg}",
        )?
        .progress_chars("=> "),
    );
    bar.set_prefix(name);
    bar.enable_steady_tick(Duration::from_millis(200));
    let generation = rebuild(&app.store, projection.clone(), app.lease_options(), |p| {
        if p.events_applied as u64 > bar.length().unwrap_or(0) {
            bar.set_length(p.events_applied as u64);
        }
        bar.set_position(p.events_applied as u64);
        if p.phase != "building" {
            bar.set_message(p.phase);
        }
    })
    .await?;
    bar.finish_with_message(format!("generation {} is live", generation.generation));
    Ok(())
}
