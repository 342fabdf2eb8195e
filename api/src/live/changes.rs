//! A change counter: whoever holds a receiver wakes at the next change instead of polling.

use std::sync::Arc;

use tokio::sync::watch;

/// Bumped at each change of what it guards; cheap to clone, and to bump with nobody waiting.
#[derive(Clone)]
pub struct Changes(Arc<watch::Sender<u64>>);

impl Default for Changes {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(0)))
    }
}

impl Changes {
    pub fn bump(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that wakes at the changes after this call.
    pub fn subscribe(&self) -> Changed {
        Changed(self.0.subscribe())
    }
}

/// Waits for changes.
pub struct Changed(watch::Receiver<u64>);

impl Changed {
    /// Completes at the next change (never, once nothing can change any more).
    pub async fn next(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
