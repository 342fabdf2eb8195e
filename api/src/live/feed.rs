//! The node's live feed: one tailer over the log, broadcast to every follower of this node (the
//! fan-out to WebSocket connections, the credential directories) through a bounded channel. A
//! follower that falls behind loses its place in the channel (never memory) and reloads from the
//! store ([`super::follow`]).

use std::sync::Arc;
use std::time::Duration;

use parley_eventstore::{EventStore, RecordedEvent, StoreError};
use tokio::sync::broadcast;

use super::Stopping;

#[derive(Clone)]
pub struct LiveFeed {
    tx: broadcast::Sender<Arc<RecordedEvent>>,
}

impl LiveFeed {
    /// Starts tailing the log from its current head until `stopping`; receivers more than
    /// `capacity` events behind lag (and reload from the store).
    pub async fn start(store: EventStore, capacity: usize, stopping: Stopping) -> Result<Self, StoreError> {
        let (tx, _) = broadcast::channel(capacity.max(1));
        let head = store.head().await?;
        let sender = tx.clone();
        stopping.spawn(move |mut stop| async move {
            let mut tail = store.tail(head, 500);
            loop {
                let batch = tokio::select! {
                    _ = stop.stopped() => return,
                    batch = tail.next_batch() => batch,
                };
                match batch {
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
