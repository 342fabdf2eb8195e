//! `parley jobs list | retry | discard`: the job queue and its dead set, for operators (every
//! account's jobs and the platform's own).

use std::process::ExitCode;

use clap::Subcommand;
use comfy_table::Table;
use parley_jobs::{JobError, JobState, QueueName};
use uuid::Uuid;

use crate::app::App;

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// The newest jobs (up to 100), optionally of one state and queue.
    List {
        /// available, scheduled, running, retryable, completed, discarded or cancelled.
        #[arg(long, value_parser = |s: &str| s.parse::<JobState>())]
        state: Option<JobState>,
        /// critical, high, default or low.
        #[arg(long, value_parser = |s: &str| s.parse::<QueueName>())]
        queue: Option<QueueName>,
    },
    /// Run a dead or retryable job again now.
    Retry { id: Uuid },
    /// Cancel a job that has not run, or remove a dead one.
    Discard { id: Uuid },
}

pub async fn run(app: &App, command: JobsCommand) -> anyhow::Result<ExitCode> {
    match command {
        JobsCommand::List { state, queue } => {
            let page = app.jobs.list(None, state, queue, 100, 0).await?;
            let mut table = Table::new();
            table.set_header(["id", "kind", "queue", "state", "attempt", "run at", "last error"]);
            for job in &page.jobs {
                let last_error = job
                    .errors
                    .as_array()
                    .and_then(|e| e.last())
                    .and_then(|e| e["error"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                table.add_row([
                    job.id.to_string(),
                    job.kind.clone(),
                    job.queue.clone(),
                    job.state.clone(),
                    format!("{}/{}", job.attempt, job.max_attempts),
                    job.run_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    last_error,
                ]);
            }
            println!("{table}");
            println!("{} of {} jobs", page.jobs.len(), page.total);
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Retry { id } => outcome(app.jobs.retry(None, id).await.map(|job| {
            println!(
                "job {} is {} again (attempt {} of {})",
                job.id,
                job.state,
                job.attempt + 1,
                job.max_attempts
            );
        })),
        JobsCommand::Discard { id } => outcome(app.jobs.cancel(None, id).await.map(|()| {
            println!("job {id} discarded");
        })),
    }
}

fn outcome(result: Result<(), JobError>) -> anyhow::Result<ExitCode> {
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(JobError::Database(e)) => Err(e.into()),
        Err(refused) => {
            eprintln!("error: {refused}");
            Ok(ExitCode::FAILURE)
        }
    }
}
