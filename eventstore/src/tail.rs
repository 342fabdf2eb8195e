//! Tailing the log: wait for wake-ups, read in commit-safe order, never skip, never repeat.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::cursor::LogCursor;
use crate::error::StoreError;
use crate::event::RecordedEvent;
use crate::store::EventStore;

/// How long a tailer waits without any wake-up before it polls anyway.
const BACKSTOP: Duration = Duration::from_secs(1);
/// Re-poll delays while committed events wait behind an open transaction.
pub const HORIZON_POLL_MIN: Duration = Duration::from_millis(2);
pub const HORIZON_POLL_MAX: Duration = Duration::from_millis(20);
/// After a read that found less than a full batch, the next read waits at least this long: under
/// load, events then arrive in larger batches instead of one query per commit per reader.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(3);

/// Wake-ups of this node: one change per commit seen (local, or another node's `NOTIFY`).
pub struct WakeSubscription {
    rx: watch::Receiver<u64>,
}

impl WakeSubscription {
    pub(crate) fn new(rx: watch::Receiver<u64>) -> Self {
        Self { rx }
    }

    /// Marks every wake-up so far as seen. Call before reading, so that a commit landing
    /// between the read and [`WakeSubscription::wait`] is not missed.
    pub fn mark_seen(&mut self) {
        self.rx.borrow_and_update();
    }

    /// Waits for a wake-up not yet seen, or `timeout`.
    pub async fn wait(&mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.rx.changed()).await;
    }
}

/// A reader of all events after a cursor, in commit-safe order, that waits for more.
pub struct Tail {
    store: EventStore,
    cursor: LogCursor,
    batch_size: i64,
    wake: WakeSubscription,
    /// Whether it reads the log itself (the node's shared reader) or follows the node's window
    /// of the log when one is kept ([`EventStore::share_reads`]).
    of_log: bool,
    /// When the last read returned less than a full batch.
    last_short_read: Option<Instant>,
}

impl Tail {
    /// A follower: answered from the node's window of the log while its cursor lies in it.
    pub(crate) fn new(store: EventStore, cursor: LogCursor, batch_size: i64) -> Self {
        let wake = store.subscribe();
        Self { store, cursor, batch_size, wake, of_log: false, last_short_read: None }
    }

    /// The node's reader: reads the log itself, woken by every commit the node hears of.
    pub(crate) fn of_log(store: EventStore, cursor: LogCursor, batch_size: i64) -> Self {
        let wake = store.subscribe_commits();
        Self { store, cursor, batch_size, wake, of_log: true, last_short_read: None }
    }

    /// The cursor of the last event returned.
    pub fn cursor(&self) -> LogCursor {
        self.cursor
    }

    /// Reads the next batch if there is one, without waiting.
    pub async fn poll(&mut self) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = if self.of_log {
            metrics::counter!("parley_follower_reads_total", "source" => "node_reader").increment(1);
            self.store.read_all_after(self.cursor, self.batch_size).await?
        } else {
            self.store.follow_after(self.cursor, self.batch_size).await?
        };
        if let Some(last) = events.last() {
            self.cursor = last.cursor();
        }
        Ok(events)
    }

    /// The next non-empty batch, waiting as long as it takes.
    pub async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut horizon_delay = HORIZON_POLL_MIN;
        loop {
            if let Some(last) = self.last_short_read {
                let since = last.elapsed();
                if since < MIN_POLL_INTERVAL {
                    tokio::time::sleep(MIN_POLL_INTERVAL - since).await;
                }
            }
            self.wake.mark_seen();
            let events = self.poll().await?;
            self.last_short_read = ((events.len() as i64) < self.batch_size).then(Instant::now);
            if !events.is_empty() {
                return Ok(events);
            }
            let behind = if self.of_log {
                self.store.events_behind_horizon().await?
            } else {
                self.store.follower_behind_horizon().await?
            };
            if behind {
                // The transaction holding them back is most likely one of ours: its commit wakes
                // us at once; one elsewhere in the cluster is re-polled with backoff.
                self.wake.wait(horizon_delay).await;
                horizon_delay = (horizon_delay * 2).min(HORIZON_POLL_MAX);
                continue;
            }
            horizon_delay = HORIZON_POLL_MIN;
            self.wake.wait(BACKSTOP).await;
        }
    }
}
