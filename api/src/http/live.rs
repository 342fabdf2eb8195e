//! The node's live feed: one tailer over the log, fanned out to every WebSocket connection of
//! this node through a bounded broadcast channel. A connection that falls behind loses its place
//! in the channel (never memory) and catches up from the store by its cursor.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parley_eventstore::{EventStore, RecordedEvent, StoreError};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

/// Events kept for slow receivers before they lag.
pub const DEFAULT_CAPACITY: usize = 4096;

#[derive(Clone)]
pub struct LiveFeed {
    tx: broadcast::Sender<Arc<RecordedEvent>>,
}

impl LiveFeed {
    /// Starts tailing the log from its current head; receivers more than `capacity` events
    /// behind lag (and catch up from the store).
    pub async fn start(store: EventStore, capacity: usize) -> Result<Self, parley_eventstore::StoreError> {
        let (tx, _) = broadcast::channel(capacity.max(1));
        let head = store.head().await?;
        let sender = tx.clone();
        tokio::spawn(async move {
            let mut tail = store.tail(head, 500);
            loop {
                match tail.next_batch().await {
                    Ok(batch) => {
                        for event in batch {
                            // No receivers is fine: nobody is listening on this node.
                            let _ = sender.send(Arc::new(event));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "live feed could not read the log; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Ok(Self { tx })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RecordedEvent>> {
        self.tx.subscribe()
    }
}

/// State a node keeps from the log in memory (ended sessions, custom roles): read from the store
/// at start, then kept current by the live feed.
pub trait FollowsLog: Clone + Send + Sync + 'static {
    /// What the state is, for a warning.
    const WHAT: &'static str;
    /// Reads what the state needs from the store (again when the feed lagged).
    fn load(&self, store: &EventStore) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Takes note of one event (any event of the log: ignore the others).
    fn observe(&self, event: &RecordedEvent);
}

/// Subscribes to the feed, *then* loads (so nothing falls between the two), then follows the feed
/// for as long as it runs, reloading when it fell behind.
pub async fn follow<S: FollowsLog>(state: S, store: &EventStore, live: &LiveFeed) -> Result<S, StoreError> {
    let mut feed = live.subscribe();
    state.load(store).await?;
    let (following, store) = (state.clone(), store.clone());
    tokio::spawn(async move {
        loop {
            match feed.recv().await {
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
