//! Sealing analytics: a cron job seals yesterday's row of every account once the analytics read
//! model has counted everything recorded so far; `parley analytics backfill` seals a range of
//! past days. Sealing is a command on the day's `AnalyticsDay` stream, so however many nodes
//! run the job, each account's day is sealed once.

use async_trait::async_trait;
use chrono::{Days, NaiveDate};
use parley_commands::services::Commands;
use parley_eventstore::{EventStore, LogCursor};
use parley_jobs::{Handler, Job, NewJob, QueueName, Schedule};
use parley_projections::{ReadModel, Reads};
use serde_json::json;
use uuid::Uuid;

/// Seals a day of every account (`day`, default yesterday as the log's clock tells).
pub const SEAL: &str = "analytics.seal";

/// Every day at 00:05 UTC.
pub fn schedule() -> Schedule {
    let seal = NewJob::new(SEAL, json!({})).queue(QueueName::Low).max_attempts(10);
    Schedule::new(SEAL, "0 5 0 * * *", seal)
}

/// What seals days: the log (its clock and head) and the write side.
#[derive(Clone)]
pub struct Sealer {
    pub store: EventStore,
    pub commands: Commands,
}

impl Sealer {
    /// The last complete UTC day.
    pub fn yesterday(&self) -> NaiveDate {
        let today = self.store.now().date_naive();
        today.checked_sub_days(Days::new(1)).unwrap_or(today)
    }

    /// Seals `day` for `account` (every account when `None`) once the analytics read model has
    /// counted every event recorded so far; only days that are over and on or after the
    /// account's first. Returns how many accounts' days it sealed (or found sealed).
    pub async fn seal(&self, day: NaiveDate, account: Option<Uuid>) -> anyhow::Result<usize> {
        let head = self.store.head().await?;
        self.seal_counted(day, account, head).await
    }

    /// [`Sealer::seal`], once the read model has counted the log up to `counted` (a backfill
    /// takes the head once: its own seals count nothing).
    pub async fn seal_counted(
        &self,
        day: NaiveDate,
        account: Option<Uuid>,
        counted: LogCursor,
    ) -> anyhow::Result<usize> {
        if day >= self.store.now().date_naive() {
            anyhow::bail!("{day} is not over yet");
        }
        let reads = Reads::new(self.store.pool(), Some(counted));
        let pool = reads.of(&[ReadModel::Analytics]).await?;
        let accounts: Vec<(Uuid,)> = sqlx::query_as(
            "SELECT account_id FROM analytics_daily WHERE ($1::uuid IS NULL OR account_id = $1) \
             GROUP BY account_id HAVING min(day) <= $2",
        )
        .bind(account)
        .bind(day)
        .fetch_all(pool)
        .await?;
        for (account_id,) in &accounts {
            self.commands.seal_analytics_day(*account_id, day).await?;
        }
        Ok(accounts.len())
    }
}

#[async_trait]
impl Handler for Sealer {
    fn kind(&self) -> &'static str {
        SEAL
    }

    /// Idempotent: a sealed day is sealed again without a new event.
    async fn run(&self, job: &Job) -> Result<(), parley_jobs::Failure> {
        let day = match job.args.get("day").and_then(|d| d.as_str()) {
            Some(day) => day.parse().map_err(|_| format!("{day} is not a date"))?,
            None => self.yesterday(),
        };
        let sealed = self.seal(day, None).await.map_err(|e| e.to_string())?;
        tracing::info!(%day, accounts = sealed, "analytics sealed");
        Ok(())
    }
}
