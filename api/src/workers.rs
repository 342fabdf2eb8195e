//! Background workers of a `parley serve` process: one projection runner per projection, one
//! runner per process manager, the job worker and the cron schedules.

use parley_commands::{jobs, process_managers};
use parley_eventstore::ConsumerRunner;
use parley_jobs::{Cron, CronError, Worker, WorkerOptions};
use parley_projections::Runner;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::analytics;
use crate::app::App;

/// Running workers; [`Workers::shutdown`] stops them and waits until they gave their leases up
/// and handed back the jobs they could not finish.
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Workers {
    /// Starts every worker of `app`; fails, naming it, when a cron schedule does not parse.
    pub fn spawn(app: &App) -> Result<Self, CronError> {
        let mut schedules = jobs::schedules();
        schedules.push(analytics::schedule());
        let cron = Cron::new(app.jobs.clone(), schedules)?;
        let (stop, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for projection in app.projections.all() {
            let runner = Runner::new(app.store.clone(), projection.clone(), app.lease_options());
            tasks.spawn(runner.run(stopped(stop.subscribe())));
        }
        let mut consumers = process_managers::all(&app.jobs);
        consumers.push(app.webhooks.fanout());
        consumers.push(app.calls.ringing());
        consumers.push(app.creator.timers());
        for consumer in consumers {
            let runner = ConsumerRunner::new(app.store.clone(), consumer, app.connect.clone());
            tasks.spawn(runner.run(stopped(stop.subscribe())));
        }
        let handlers = jobs::handlers(app.store.pool().clone(), app.jobs.clone());
        let handlers =
            app.calls.handlers(app.webhooks.handlers(handlers)).with(app.sealer()).with(app.rebuilds());
        let handlers = app.creator.handlers(handlers);
        // Accounts opened before spaces existed get their primary space.
        let queue = app.jobs.clone();
        tasks.spawn(async move {
            let job = parley_commands::creator::Creator::open_primary_spaces_job();
            match queue.pool().acquire().await {
                Ok(mut conn) => {
                    if let Err(e) = queue.enqueue(&mut conn, &job).await {
                        tracing::warn!(error = %e, "could not enqueue the primary-space backfill");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not enqueue the primary-space backfill"),
            }
        });
        let options = WorkerOptions { concurrency: app.job_concurrency, ..WorkerOptions::default() };
        let worker = Worker::new(app.jobs.clone(), handlers, options);
        tasks.spawn(worker.run(stopped(stop.subscribe())));
        tasks.spawn(cron.run(stopped(stop.subscribe())));
        Ok(Self { stop, tasks })
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
