//! The one way a node keeps state from the log in memory: subscribe to the live feed, *then*
//! load from the store (so no event falls between the two), then follow the feed until the node
//! stops, loading again whenever the feed left it behind. The fan-out and every credential
//! directory follow the log this way. The node's own commits reach them earlier still, through
//! the store's commit observers ([`super::OwnCommits`]): `observe` must accept an event twice
//! and ignore news older than what it knows.

use std::future::Future;
use std::sync::Arc;

use parley_eventstore::{EventStore, RecordedEvent, StoreError};
use tokio::sync::broadcast::error::RecvError;

use super::feed::LiveFeed;
use super::Stopping;

/// State a node keeps from the log.
pub trait FollowsLog: Clone + Send + Sync + 'static {
    /// What the state is, for a warning.
    const WHAT: &'static str;
    /// Reads what the state needs from the store (again after the feed left it behind).
    fn load(&self, store: &EventStore) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Takes note of one event (any event of the log: ignore the others).
    fn observe(&self, event: &Arc<RecordedEvent>);
}

/// Subscribes to the feed, loads, then follows it until `stopping`.
pub async fn follow<S: FollowsLog>(
    state: S,
    store: &EventStore,
    live: &LiveFeed,
    stopping: &Stopping,
) -> Result<S, StoreError> {
    let mut feed = live.subscribe();
    state.load(store).await?;
    let (following, store) = (state.clone(), store.clone());
    stopping.spawn(move |mut stop| async move {
        loop {
            let received = tokio::select! {
                _ = stop.stopped() => return,
                received = feed.recv() => received,
            };
            match received {
                Ok(event) => following.observe(&event),
                Err(RecvError::Lagged(_)) => {
                    if let Err(e) = following.load(&store).await {
                        tracing::warn!(error = %e, "could not reload {}", S::WHAT);
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
    Ok(state)
}
