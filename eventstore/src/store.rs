//! The store handle: a pool, the upcasters, and the node's wake-up channel.

use chrono::{DateTime, Utc};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};

use tokio::sync::{watch, Notify};

use crate::append::{self, Appended, StreamAppend};
use crate::cursor::LogCursor;
use crate::error::StoreError;
use crate::event::{RecordedEvent, StreamKey};
use crate::read::{self, EventFilter};
use crate::tail::{Tail, WakeSubscription};
use crate::transaction::StoreTransaction;
use crate::upcast::Upcasters;
use crate::window::SharedWindow;

/// The channel other nodes `LISTEN` on; its payload is empty (a wake-up, not data).
pub const NOTIFY_CHANNEL: &str = "parley_events";

/// A handle on the log. Cheap to clone; all clones share one wake-up channel.
#[derive(Clone)]
pub struct EventStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pool: PgPool,
    upcasters: Upcasters,
    /// Bumped after every local commit and every `NOTIFY` heard: the node's reader waits on it.
    commits: watch::Sender<u64>,
    /// What followers wait on: every commit heard, or, while the node keeps a window of the log,
    /// every time the window grows.
    pub(crate) wake: watch::Sender<u64>,
    /// The newest events, kept by the node's one reader of the log ([`EventStore::share_reads`]).
    pub(crate) window: RwLock<Option<SharedWindow>>,
    /// Followers' reads answered from the window, and from the log.
    pub(crate) follower_reads: [AtomicU64; 2],
    /// Asks the notifier task to send one `NOTIFY` (coalesced: many commits, one notification).
    notify_others: Arc<Notify>,
    /// Told of this process's own events at their commit (held weakly: an observer that is
    /// dropped stops being told).
    observers: RwLock<Vec<Weak<dyn CommitObserver>>>,
    /// Told of every batch the node's one reader reads (held weakly, like `observers`).
    log_observers: RwLock<Vec<Weak<dyn LogObserver>>>,
    /// When events are recorded: the system clock, unless a test set its own.
    clock: RwLock<Option<Clock>>,
}

/// A clock a test gives the store, to record events on days of its choosing.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Told of the events this process commits, at their commit, before the call that commits
/// returns: a node's in-memory state (credential directories) learns of its own changes before
/// it answers the request that made them. Other processes' events reach it through the log.
pub trait CommitObserver: Send + Sync + 'static {
    /// Whether it cares for events of this type (others are not even built for it: most events
    /// are messages, which no observer wants).
    fn wants(&self, event_type: &str) -> bool;
    /// One committed event it wants, in commit order.
    fn committed(&self, event: &RecordedEvent);
}

/// Told of the log as the node's one reader reads it ([`EventStore::share_reads`]): every
/// node's events, this one's included, in commit-safe order, shortly after they commit. A node's
/// caches of what others write learn from it that they are behind.
pub trait LogObserver: Send + Sync + 'static {
    fn read(&self, events: &[RecordedEvent]);
}

impl EventStore {
    /// Must be called inside a tokio runtime: it starts the coalescing notifier task.
    pub fn new(pool: PgPool, upcasters: Upcasters) -> Self {
        let (wake, _) = watch::channel(0);
        let (commits, _) = watch::channel(0);
        let notify_others = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            pool,
            upcasters,
            commits,
            wake,
            window: RwLock::default(),
            follower_reads: Default::default(),
            notify_others: notify_others.clone(),
            observers: RwLock::default(),
            log_observers: RwLock::default(),
            clock: RwLock::default(),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(notifier(Arc::downgrade(&inner), notify_others));
        }
        Self { inner }
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Records events at the times `clock` tells from now on (tests that need events on past
    /// days: analytics); the system clock otherwise. Positions still follow commit order.
    pub fn use_clock(&self, clock: Clock) {
        if let Ok(mut current) = self.inner.clock.write() {
            *current = Some(clock);
        }
    }

    /// The time an event appended now is recorded at.
    pub fn now(&self) -> DateTime<Utc> {
        match self.inner.clock.read().ok().and_then(|c| c.clone()) {
            Some(clock) => clock(),
            None => Utc::now(),
        }
    }

    pub fn upcasters(&self) -> &Upcasters {
        &self.inner.upcasters
    }

    /// Appends to one stream in its own transaction: one round trip.
    #[tracing::instrument(skip_all, fields(stream = %batch.stream, events = batch.events.len()))]
    pub async fn append(&self, batch: &StreamAppend) -> Result<Appended, StoreError> {
        let mut conn = self.inner.pool.acquire().await?;
        let appended = append::append_alone(&mut conn, batch, self.now()).await?;
        self.committed();
        let mut observed = Vec::new();
        self.observable(batch, &appended, &mut observed);
        self.tell_observers(&observed);
        Ok(appended)
    }

    /// Starts several streams by one autocommit statement (see `append::insert_new_streams`):
    /// all or none. Appends at another expected version than 0 make it one transaction of
    /// [`StoreTransaction::append_all`] instead.
    #[tracing::instrument(skip_all, fields(streams = batches.len()))]
    pub async fn start_streams(&self, batches: &[&StreamAppend]) -> Result<Vec<Appended>, StoreError> {
        if batches.iter().any(|b| b.expected_version != 0) {
            let mut tx = self.begin().await?;
            let appended = tx.append_all(batches).await?;
            tx.commit().await?;
            return Ok(appended);
        }
        let mut conn = self.inner.pool.acquire().await?;
        let appended = append::insert_new_streams(&mut conn, batches, self.now()).await?;
        self.committed();
        let mut observed = Vec::new();
        for (batch, placed) in batches.iter().zip(&appended) {
            self.observable(batch, placed, &mut observed);
        }
        self.tell_observers(&observed);
        Ok(appended)
    }

    /// Tells `observer` of every event this process commits from now on, until it is dropped.
    pub fn observe_commits(&self, observer: &Arc<dyn CommitObserver>) {
        if let Ok(mut observers) = self.inner.observers.write() {
            observers.retain(|o| o.strong_count() > 0);
            observers.push(Arc::downgrade(observer));
        }
    }

    /// Tells `observer` of every batch the node's reader of the log reads from now on, until it
    /// is dropped. Nothing is told while the node shares no reads.
    pub fn observe_log(&self, observer: &Arc<dyn LogObserver>) {
        if let Ok(mut observers) = self.inner.log_observers.write() {
            observers.retain(|o| o.strong_count() > 0);
            observers.push(Arc::downgrade(observer));
        }
    }

    /// Tells the log's observers of a batch the node's reader read.
    pub(crate) fn tell_log_observers(&self, events: &[RecordedEvent]) {
        if events.is_empty() {
            return;
        }
        let observers: Vec<_> = self
            .inner
            .log_observers
            .read()
            .map(|o| o.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default();
        for observer in observers {
            observer.read(events);
        }
    }

    /// The live observers, or none.
    fn observers(&self) -> Vec<Arc<dyn CommitObserver>> {
        self.inner.observers.read().map(|o| o.iter().filter_map(Weak::upgrade).collect()).unwrap_or_default()
    }

    /// Adds to `out` the events of `batch` (appended as `appended`) that some observer wants.
    /// Called on every append: without observers it only reads an empty list, and an event no
    /// observer wants (a message) is not copied.
    pub(crate) fn observable(&self, batch: &StreamAppend, appended: &Appended, out: &mut Vec<RecordedEvent>) {
        let Ok(observers) = self.inner.observers.read() else { return };
        if observers.is_empty() {
            return;
        }
        let wanted =
            |event_type: &str| observers.iter().any(|o| o.upgrade().is_some_and(|o| o.wants(event_type)));
        let mut metadata = None;
        for (event, placed) in batch.events.iter().zip(&appended.events) {
            if !wanted(&event.event_type) {
                continue;
            }
            let metadata = metadata.get_or_insert_with(|| batch.metadata.to_json()).clone();
            out.push(RecordedEvent {
                position: placed.position,
                transaction_id: placed.transaction_id,
                event_id: placed.event_id,
                account_id: batch.account_id,
                stream_type: batch.stream.stream_type.clone(),
                stream_id: batch.stream.stream_id.clone(),
                version: placed.version,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                payload: event.payload.clone(),
                metadata,
                recorded_at: placed.recorded_at,
            });
        }
    }

    pub(crate) fn tell_observers(&self, events: &[RecordedEvent]) {
        if events.is_empty() {
            return;
        }
        for observer in self.observers() {
            for event in events.iter().filter(|e| observer.wants(&e.event_type)) {
                observer.committed(event);
            }
        }
    }

    /// Starts a write transaction: lock streams, read them, append, write claims and
    /// idempotency rows, then commit. Keep it short: any open transaction holds readers back.
    pub async fn begin(&self) -> Result<StoreTransaction, StoreError> {
        Ok(StoreTransaction::new(self.inner.pool.begin().await?, self.clone()))
    }

    /// Wakes this node's tailers now and other nodes through one coalesced `NOTIFY`.
    /// Call after a commit that appended events.
    pub fn committed(&self) {
        self.inner.heard_commit();
        self.inner.notify_others.notify_one();
    }

    /// A follower's wake-ups: after every commit this node sees, or, while the node keeps a
    /// window of the log, after every time the window grows.
    pub fn subscribe(&self) -> WakeSubscription {
        WakeSubscription::new(self.inner.wake.subscribe())
    }

    /// The node's reader's wake-ups: after every commit this node sees.
    pub(crate) fn subscribe_commits(&self) -> WakeSubscription {
        WakeSubscription::new(self.inner.commits.subscribe())
    }

    /// A tailer over all events after `cursor`.
    pub fn tail(&self, cursor: LogCursor, batch_size: i64) -> Tail {
        Tail::new(self.clone(), cursor, batch_size)
    }

    /// Listens for other nodes' commits and turns them into local wake-ups. Runs until the
    /// store is dropped; reconnects after connection loss (a missed notification only costs the
    /// backstop interval, and a reconnect wakes everyone once to be safe).
    pub async fn spawn_listener(&self) -> Result<(), StoreError> {
        let mut listener = PgListener::connect_with(&self.inner.pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let got = listener.try_recv().await;
                let Some(inner) = weak.upgrade() else { return };
                match got {
                    Ok(_) => inner.heard_commit(),
                    Err(e) => {
                        tracing::warn!(error = %e, "event listener lost its connection");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Ok(())
    }

    /// Up to `limit` events after `cursor` in commit-safe order.
    pub async fn read_all_after(
        &self,
        cursor: LogCursor,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut conn = self.inner.pool.acquire().await?;
        read::read_all_after(&mut conn, &self.inner.upcasters, cursor, limit).await
    }

    /// Whether committed events wait behind an older open transaction.
    pub async fn events_behind_horizon(&self) -> Result<bool, StoreError> {
        let mut conn = self.inner.pool.acquire().await?;
        read::events_behind_horizon(&mut conn).await
    }

    /// The cursor of a stream's newest committed event, if it has one.
    pub async fn stream_head(&self, stream: &StreamKey) -> Result<Option<LogCursor>, StoreError> {
        let mut conn = self.inner.pool.acquire().await?;
        read::stream_head(&mut conn, stream).await
    }

    /// The cursor of the newest event readers can see.
    pub async fn head(&self) -> Result<LogCursor, StoreError> {
        let mut conn = self.inner.pool.acquire().await?;
        read::head(&mut conn).await
    }

    /// A stream's events with `after_version < version <= up_to_version`.
    pub async fn read_stream(
        &self,
        stream: &StreamKey,
        after_version: i64,
        up_to_version: Option<i64>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut conn = self.inner.pool.acquire().await?;
        read::read_stream(
            &mut conn,
            &self.inner.upcasters,
            &stream.stream_type,
            &stream.stream_id,
            after_version,
            up_to_version,
        )
        .await
    }

    /// Up to `limit` events matching `filter`, in commit-safe order.
    pub async fn query(&self, filter: &EventFilter, limit: i64) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut conn = self.inner.pool.acquire().await?;
        read::query(&mut conn, &self.inner.upcasters, filter, limit).await
    }
}

impl Inner {
    /// A commit of this node or another: the node's reader looks, and so do the followers unless
    /// they follow the reader's window.
    fn heard_commit(&self) {
        self.commits.send_modify(|n| *n = n.wrapping_add(1));
        let shared = self.window.read().map(|w| w.is_some()).unwrap_or(false);
        if !shared {
            self.wake.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// Sends at most one `NOTIFY` per burst of commits, outside any append transaction (a `NOTIFY`
/// inside it would serialise every commit on the notification queue lock). Under load it sends
/// at most one per [`NOTIFY_INTERVAL`]: the commits meanwhile are all covered by the next one, so
/// other nodes hear of them at most that much later.
async fn notifier(inner: Weak<Inner>, wanted: Arc<Notify>) {
    loop {
        wanted.notified().await;
        let Some(pool) = inner.upgrade().map(|i| i.pool.clone()) else { return };
        let sent = sqlx::query("SELECT pg_notify($1, '')").bind(NOTIFY_CHANNEL).execute(&pool).await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "could not notify other nodes; they fall back to polling");
        }
        drop(pool);
        tokio::time::sleep(NOTIFY_INTERVAL).await;
    }
}

/// The shortest time between two `NOTIFY`s of one node.
const NOTIFY_INTERVAL: Duration = Duration::from_millis(2);
