//! The node's one reader of the log. Without it every follower of a node (each read model's
//! runner, each process manager, the live feed) reads the log on its own after every commit it
//! hears of: sixteen queries of the same rows per wake-up. With it, one tailer reads the log in
//! commit-safe order and keeps the newest events in memory; a follower whose cursor lies in that
//! window is answered from memory and woken when the window grows. A follower outside it (a
//! rebuild, a consumer far behind, one that started before the window) reads the log itself, as
//! before, until it reaches the window.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cursor::LogCursor;
use crate::error::StoreError;
use crate::event::RecordedEvent;
use crate::store::EventStore;
use crate::tail::Tail;

/// Events the node's tailer reads per query.
const TAILER_BATCH: i64 = 500;

/// The newest events of the log, contiguous in commit-safe order: every event with a cursor in
/// `(start, end]` is held, in order, and no other.
pub(crate) struct Window {
    start: LogCursor,
    events: VecDeque<Arc<RecordedEvent>>,
    capacity: usize,
}

impl Window {
    pub(crate) fn new(start: LogCursor, capacity: usize) -> Self {
        Self { start, events: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// The cursor of the newest event held (`start` when none is).
    pub(crate) fn end(&self) -> LogCursor {
        self.events.back().map_or(self.start, |e| e.cursor())
    }

    /// Up to `limit` events after `cursor`, when the window holds every event after it up to
    /// its end (empty: the follower is at the end); `None` when `cursor` lies outside it.
    pub(crate) fn after(&self, cursor: LogCursor, limit: usize) -> Option<Vec<RecordedEvent>> {
        if cursor < self.start || cursor > self.end() {
            return None;
        }
        let from = self.events.partition_point(|e| e.cursor() <= cursor);
        Some(self.events.range(from..).take(limit).map(|e| RecordedEvent::clone(e)).collect())
    }

    /// Adds the next events of the log (read after [`Window::end`]), forgetting the oldest past
    /// the capacity.
    pub(crate) fn push(&mut self, events: Vec<RecordedEvent>) {
        debug_assert!(events.first().is_none_or(|e| e.cursor() > self.end()));
        self.events.extend(events.into_iter().map(Arc::new));
        while self.events.len() > self.capacity {
            if let Some(oldest) = self.events.pop_front() {
                self.start = oldest.cursor();
            }
        }
    }
}

pub(crate) type SharedWindow = Arc<Mutex<Window>>;

/// The running tailer of [`EventStore::share_reads`]. [`SharedReads::stop`] ends it; its
/// followers then read the log on their own again.
pub struct SharedReads {
    store: EventStore,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SharedReads {
    pub(crate) fn start(store: EventStore, window: SharedWindow, from: LogCursor) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn({
            let store = store.clone();
            async move {
                let mut tail = Tail::of_log(store.clone(), from, TAILER_BATCH);
                loop {
                    let batch = tokio::select! {
                        _ = stopped.wait_for(|stop| *stop) => return,
                        batch = tail.next_batch() => batch,
                    };
                    match batch {
                        Ok(events) => {
                            store.tell_log_observers(&events);
                            if let Ok(mut window) = window.lock() {
                                window.push(events);
                            }
                            store.window_advanced();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "the node's reader of the log failed; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
        });
        Self { store, stop, task }
    }

    /// Followers' reads of this store so far: (answered from the window, read from the log).
    pub fn reads(&self) -> (u64, u64) {
        self.store.follower_reads()
    }

    /// Stops the tailer; the node's followers read the log themselves from now on.
    pub async fn stop(mut self) {
        self.store.unshare_reads();
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
    }
}

impl Drop for SharedReads {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventStore {
    /// Starts the node's one reader of the log: it keeps the newest `capacity` events in memory,
    /// and this store's followers ([`EventStore::follow_after`], [`EventStore::tail`], every
    /// checkpointed consumer) read from there while their cursors lie in that window.
    pub async fn share_reads(&self, capacity: usize) -> Result<SharedReads, StoreError> {
        let head = self.head().await?;
        let shared: SharedWindow = Arc::new(Mutex::new(Window::new(head, capacity)));
        if let Ok(mut window) = self.inner.window.write() {
            *window = Some(shared.clone());
        }
        Ok(SharedReads::start(self.clone(), shared, head))
    }

    /// Followers read the log themselves again (and look at once).
    pub(crate) fn unshare_reads(&self) {
        if let Ok(mut window) = self.inner.window.write() {
            *window = None;
        }
        self.window_advanced();
    }

    /// Wakes the followers: the window grew (or went away).
    pub(crate) fn window_advanced(&self) {
        self.inner.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn window(&self) -> Option<SharedWindow> {
        self.inner.window.read().ok().and_then(|w| w.clone())
    }

    /// A follower's read: up to `limit` events after `cursor` in commit-safe order, from the
    /// node's window of the log when `cursor` lies in it (then perhaps older than the log: the
    /// follower is woken when the window grows), from the log otherwise.
    pub async fn follow_after(
        &self,
        cursor: LogCursor,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let limit_in_memory = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
        let from_window = self.window().and_then(|w| w.lock().ok()?.after(cursor, limit_in_memory));
        if let Some(events) = from_window {
            self.count_follower_read(true);
            return Ok(events);
        }
        self.count_follower_read(false);
        self.read_all_after(cursor, limit).await
    }

    fn count_follower_read(&self, from_window: bool) {
        self.inner.follower_reads[usize::from(!from_window)].fetch_add(1, Ordering::Relaxed);
        let source = if from_window { "window" } else { "log" };
        metrics::counter!("parley_follower_reads_total", "source" => source).increment(1);
    }

    /// Followers' reads so far: (answered from the node's window, read from the log).
    pub fn follower_reads(&self) -> (u64, u64) {
        let [window, log] = &self.inner.follower_reads;
        (window.load(Ordering::Relaxed), log.load(Ordering::Relaxed))
    }

    /// [`EventStore::events_behind_horizon`] for a follower with nothing new: while the node
    /// keeps a window, its reader watches the horizon and wakes the followers when it passes.
    pub async fn follower_behind_horizon(&self) -> Result<bool, StoreError> {
        if self.window().is_some() {
            return Ok(false);
        }
        self.events_behind_horizon().await
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    fn event(transaction_id: u64, position: i64) -> RecordedEvent {
        RecordedEvent {
            position,
            transaction_id,
            event_id: Uuid::now_v7(),
            account_id: Uuid::nil(),
            stream_type: "T".into(),
            stream_id: "s".into(),
            version: position,
            event_type: "E".into(),
            schema_version: 1,
            payload: json!({}),
            metadata: json!({}),
            recorded_at: Utc::now(),
        }
    }

    fn cursors(events: &[RecordedEvent]) -> Vec<LogCursor> {
        events.iter().map(RecordedEvent::cursor).collect()
    }

    #[test]
    fn a_follower_inside_the_window_gets_what_follows_its_cursor() {
        let mut window = Window::new(LogCursor::new(10, 5), 100);
        window.push(vec![event(11, 7), event(11, 8), event(13, 6)]);
        let all = window.after(LogCursor::new(10, 5), 100).unwrap();
        assert_eq!(cursors(&all), [LogCursor::new(11, 7), LogCursor::new(11, 8), LogCursor::new(13, 6)]);
        // A cursor between events (a checkpoint of another order of the same log) works too.
        assert_eq!(cursors(&window.after(LogCursor::new(12, 1), 100).unwrap()), [LogCursor::new(13, 6)]);
        assert_eq!(cursors(&window.after(LogCursor::new(11, 7), 1).unwrap()), [LogCursor::new(11, 8)]);
        assert!(window.after(LogCursor::new(13, 6), 100).unwrap().is_empty(), "at the end: nothing new");
    }

    #[test]
    fn a_follower_outside_the_window_reads_the_log_itself() {
        let mut window = Window::new(LogCursor::new(10, 5), 2);
        window.push(vec![event(11, 7), event(11, 8), event(13, 6)]);
        // The oldest event was forgotten: the window now starts after it.
        assert!(window.after(LogCursor::new(10, 5), 10).is_none(), "behind the window");
        assert!(window.after(LogCursor::new(11, 6), 10).is_none(), "behind the window");
        assert_eq!(cursors(&window.after(LogCursor::new(11, 7), 10).unwrap()).len(), 2);
        assert!(window.after(LogCursor::new(14, 1), 10).is_none(), "ahead of the window");
    }

    #[test]
    fn an_empty_window_answers_only_its_start() {
        let window = Window::new(LogCursor::new(10, 5), 4);
        assert_eq!(window.after(LogCursor::new(10, 5), 10), Some(vec![]));
        assert!(window.after(LogCursor::START, 10).is_none());
        assert!(window.after(LogCursor::new(10, 6), 10).is_none());
    }
}
