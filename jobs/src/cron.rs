//! Cron: schedules in cron syntax (seconds optional), each enqueuing its job once per tick across
//! every node. Each schedule has a row of its last tick; a node enqueues a tick's job only in the
//! transaction that moves that row forward, so two nodes never both enqueue it, pruning the jobs
//! table changes nothing, and after every node was down over several ticks only the latest runs,
//! once.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds};

use crate::job::NewJob;
use crate::queue::JobQueue;

/// One schedule: its stored name, its cron expression, and the job each tick enqueues.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub name: String,
    pub expression: String,
    pub job: NewJob,
}

impl Schedule {
    pub fn new(name: impl Into<String>, expression: impl Into<String>, job: NewJob) -> Self {
        Self { name: name.into(), expression: expression.into(), job }
    }
}

/// A schedule's expression that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("the cron schedule {name:?} has an expression that does not parse ({expression:?}): {reason}")]
pub struct CronError {
    pub name: String,
    pub expression: String,
    pub reason: String,
}

/// Every schedule of a process.
#[derive(Clone)]
pub struct Cron {
    queue: JobQueue,
    schedules: Vec<(Schedule, croner::Cron)>,
}

impl Cron {
    /// Parses every schedule's expression; the first that does not parse is named.
    pub fn new(queue: JobQueue, schedules: Vec<Schedule>) -> Result<Self, CronError> {
        let parser = CronParser::builder().seconds(Seconds::Optional).build();
        let schedules = schedules
            .into_iter()
            .map(|s| match parser.parse(&s.expression) {
                Ok(cron) => Ok((s, cron)),
                Err(e) => Err(CronError { name: s.name, expression: s.expression, reason: e.to_string() }),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { queue, schedules })
    }

    /// Enqueues the latest due tick of every schedule that this or another node has not
    /// enqueued yet; returns how many jobs that made. A schedule seen for the first time starts
    /// counting from now.
    pub async fn tick(&self) -> Result<usize, sqlx::Error> {
        let now = self.queue.now();
        let mut enqueued = 0;
        for (schedule, cron) in &self.schedules {
            let Ok(latest) = cron.find_previous_occurrence(&now, true) else { continue };
            let mut tx = self.queue.pool().begin().await?;
            let first_sight = sqlx::query(
                "INSERT INTO cron_ticks (name, last_tick) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(&schedule.name)
            .bind(latest)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if first_sight {
                tx.commit().await?;
                continue;
            }
            let moved =
                sqlx::query("UPDATE cron_ticks SET last_tick = $2 WHERE name = $1 AND last_tick < $2")
                    .bind(&schedule.name)
                    .bind(latest)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
            if moved {
                self.queue.enqueue(&mut tx, &schedule.job).await?;
                tx.commit().await?;
                enqueued += 1;
                tracing::debug!(schedule = %schedule.name, tick = %latest, "cron tick enqueued");
            } else {
                tx.rollback().await?;
            }
        }
        if enqueued > 0 {
            self.queue.wake().await;
        }
        Ok(enqueued)
    }

    /// When the next tick of any schedule is due.
    pub fn next_tick(&self) -> Option<DateTime<Utc>> {
        let now = self.queue.now();
        self.schedules.iter().filter_map(|(_, cron)| cron.find_next_occurrence(&now, false).ok()).min()
    }

    /// Ticks at every due time until `stop`.
    pub async fn run(self, stop: impl Future<Output = ()> + Send) {
        tokio::pin!(stop);
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "cron could not tick; trying again");
            }
            let wait = self
                .next_tick()
                .and_then(|at| (at - self.queue.now()).to_std().ok())
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(60));
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
