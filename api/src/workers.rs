//! Background workers of a `parley serve` process: one projection runner per projection.

use parley_projections::Runner;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::app::App;

/// Running workers; [`Workers::shutdown`] stops them and waits until they gave their leases up.
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Workers {
    pub fn spawn(app: &App) -> Self {
        let (stop, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for projection in app.projections.all() {
            let runner = Runner::new(app.store.clone(), projection.clone(), app.lease_options());
            tasks.spawn(runner.run(stopped(stop.subscribe())));
        }
        Self { stop, tasks }
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
