//! The node's live feed: one tailer over the log, fanned out to every WebSocket connection of
//! this node through a bounded broadcast channel. A connection that falls behind loses its place
//! in the channel (never memory) and catches up from the store by its cursor.

use std::sync::Arc;
use std::time::Duration;

use parley_eventstore::{EventStore, RecordedEvent};
use tokio::sync::broadcast;

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
