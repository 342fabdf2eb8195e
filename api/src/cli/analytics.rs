//! `parley analytics backfill`: seals a range of past days, for one account or all of them.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use parley_projections::{ReadModel, Runner, StepOutcome};
use uuid::Uuid;

use crate::app::App;

#[derive(Debug, Subcommand)]
pub enum AnalyticsCommand {
    /// Seal past days' rows (the counters are kept as events arrive; sealing marks a day final).
    Backfill {
        /// The first day (UTC, YYYY-MM-DD).
        #[arg(long)]
        from: NaiveDate,
        /// The last day; it must be over.
        #[arg(long)]
        to: NaiveDate,
        /// Only this account.
        #[arg(long)]
        account: Option<Uuid>,
    },
}

pub async fn run(app: &App, command: AnalyticsCommand) -> anyhow::Result<ExitCode> {
    match command {
        AnalyticsCommand::Backfill { from, to, account } => {
            if from > to {
                anyhow::bail!("--from {from} is after --to {to}");
            }
            // Everything recorded so far counted first; the seals are applied at the end.
            catch_up(app).await?;
            let counted = app.store.head().await?;
            let days = (to - from).num_days() as u64 + 1;
            let bar = ProgressBar::new(days);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>9} [{bar:40}] {pos}/{len} days, {per_sec}, ETA {eta}",
                )?
                .progress_chars("=> "),
            );
            bar.set_prefix("backfill");
            let (sealer, started) = (app.sealer(), Instant::now());
            for d in 0..days {
                let day = from
                    .checked_add_days(Days::new(d))
                    .ok_or_else(|| anyhow::anyhow!("{from} + {d} days"))?;
                sealer.seal_counted(day, account, counted).await?;
                bar.inc(1);
            }
            bar.finish();
            catch_up(app).await?;
            let seconds = started.elapsed().as_secs_f64();
            println!("sealed {days} days in {seconds:.2} s ({:.0} days/s)", days as f64 / seconds.max(1e-9));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Brings the analytics read model up to the log's head: here, when no server runs it (or
/// waiting for the server that does).
async fn catch_up(app: &App) -> anyhow::Result<()> {
    let projection = app
        .projections
        .get(ReadModel::Analytics.name())
        .ok_or_else(|| anyhow::anyhow!("this build has no analytics projection"))?;
    let mut runner = Runner::new(app.store.clone(), projection, app.lease_options());
    if !runner.acquire().await? {
        // A server's runner holds it and keeps it current; sealing waits for it.
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        match runner.step().await? {
            StepOutcome::Idle => break,
            StepOutcome::NotLeader => anyhow::bail!("another process took the analytics projection over"),
            StepOutcome::Applied(_) | StepOutcome::HandedOver(_) => {}
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the analytics projection did not catch up within an hour"
        );
    }
    runner.release().await;
    Ok(())
}
