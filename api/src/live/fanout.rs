//! Routes the live feed to the WebSocket connections that asked for each event: one task reads
//! the node's feed and hands every event only to the connections subscribed to its stream (a
//! conversation) or its account (the `account` and `user` channels). Work per event is its
//! subscribers, not every connection of the node.
//!
//! Each connection has a bounded queue. When it is full, or the router itself fell behind the
//! feed, the connection is told it lagged and catches up from the store by its cursors: a slow
//! client costs its own queue, never memory or other clients.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use parley_eventstore::{EventStore, RecordedEvent, StoreError};
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;

use super::follow::FollowsLog;

/// An event on its way to its subscribers, with the `event` object of its frames rendered at
/// most once however many connections send it.
pub struct Routed {
    pub event: Arc<RecordedEvent>,
    rendered: OnceLock<String>,
    /// Action Cable's message of the event, which may read a read model to render.
    rendered_for_cable: tokio::sync::OnceCell<Option<String>>,
}

impl Routed {
    /// What `render` makes of the event, rendered once for all the connections that send it.
    pub fn rendered(&self, render: fn(&RecordedEvent) -> String) -> &str {
        self.rendered.get_or_init(|| render(&self.event))
    }

    /// What `render` makes of the event (nothing for an event it does not show), rendered once
    /// for all the Action Cable connections that send it.
    pub async fn rendered_once<F, Fut>(&self, render: F) -> Option<&str>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Option<String>>,
    {
        self.rendered_for_cable.get_or_init(render).await.as_deref()
    }
}

/// What a connection listens to: one stream of an account, or the whole account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Interest {
    Stream { account_id: Uuid, stream_type: String, stream_id: String },
    Account(Uuid),
}

impl Interest {
    fn of_stream(e: &RecordedEvent) -> Self {
        Interest::Stream {
            account_id: e.account_id,
            stream_type: e.stream_type.clone(),
            stream_id: e.stream_id.clone(),
        }
    }
}

/// The router's side of one connection.
#[derive(Clone)]
struct Tap {
    tx: mpsc::Sender<Arc<Routed>>,
    lagged: Arc<AtomicBool>,
    wake: Arc<Notify>,
    /// The fan-out's count of connections told they lagged.
    lags: Arc<AtomicU64>,
}

impl Tap {
    fn lag(&self) {
        if !self.lagged.swap(true, Ordering::AcqRel) {
            self.lags.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("parley_ws_lagged_total").increment(1);
        }
        self.wake.notify_one();
    }
}

#[derive(Default)]
struct Table {
    taps: HashMap<u64, Tap>,
    interests: HashMap<Interest, HashSet<u64>>,
}

#[derive(Clone)]
pub struct Fanout {
    table: Arc<RwLock<Table>>,
    next: Arc<AtomicU64>,
    capacity: usize,
    lags: Arc<AtomicU64>,
}

impl Fanout {
    /// A router with no connections yet; each connection will queue up to `capacity` events
    /// before it lags. It routes once it follows the feed ([`super::follow`]).
    pub fn new(capacity: usize) -> Self {
        Self { table: Arc::default(), next: Arc::default(), capacity: capacity.max(1), lags: Arc::default() }
    }

    /// How many times a connection of this node was told it lagged (and caught up from the store).
    pub fn lags(&self) -> u64 {
        self.lags.load(Ordering::Relaxed)
    }

    fn route(&self, event: &Arc<RecordedEvent>) {
        let Ok(table) = self.table.read() else { return };
        let stream = table.interests.get(&Interest::of_stream(event));
        let account = table.interests.get(&Interest::Account(event.account_id));
        if stream.is_none() && account.is_none() {
            return;
        }
        let routed = Arc::new(Routed {
            event: event.clone(),
            rendered: OnceLock::new(),
            rendered_for_cable: Default::default(),
        });
        // A connection listening to both the stream and its account gets the event once.
        let twice = |id: &u64| stream.is_some_and(|s| s.contains(id));
        let account_only = account.into_iter().flatten().filter(|id| !twice(id));
        for id in stream.into_iter().flatten().chain(account_only) {
            let Some(tap) = table.taps.get(id) else { continue };
            if let Err(mpsc::error::TrySendError::Full(_)) = tap.tx.try_send(routed.clone()) {
                tap.lag();
            }
        }
    }

    fn lag_all(&self) {
        if let Ok(table) = self.table.read() {
            table.taps.values().for_each(Tap::lag);
        }
    }

    /// A new connection's listener: it hears nothing until it says what it wants.
    pub fn listen(&self) -> Listener {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.capacity);
        let tap = Tap { tx, lagged: Arc::default(), wake: Arc::default(), lags: self.lags.clone() };
        let (lagged, wake) = (tap.lagged.clone(), tap.wake.clone());
        if let Ok(mut table) = self.table.write() {
            table.taps.insert(id, tap);
        }
        Listener { id, rx, lag: LagSignal { lagged, wake }, fanout: self.clone(), interests: HashMap::new() }
    }
}

/// A connection's side: the events of what it listens to, in log order.
pub struct Listener {
    id: u64,
    rx: mpsc::Receiver<Arc<Routed>>,
    lag: LagSignal,
    fanout: Fanout,
    /// What it listens to, with how many of its subscriptions want each.
    interests: HashMap<Interest, usize>,
}

/// Tells a connection that events were dropped for it (it must catch up from the store).
#[derive(Clone)]
pub struct LagSignal {
    lagged: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

impl LagSignal {
    /// Whether events were dropped for the connection since it last caught up. Set before any
    /// newer event is queued: a connection that sees it must deliver nothing more before it
    /// catches up, or it would skip what was dropped.
    pub fn is_lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }

    /// Completes once the connection lagged.
    pub async fn lagged(&self) {
        while !self.lagged.load(Ordering::Acquire) {
            self.wake.notified().await;
        }
    }

    /// Takes note of having caught up.
    pub fn caught_up(&self) {
        self.lagged.store(false, Ordering::Release);
    }
}

impl Listener {
    /// Hears `interest` from now on. Say it before reading where to start from (the log head or
    /// the store): then no event falls between the two.
    pub fn listen_to(&mut self, interest: Interest) {
        let wanted = self.interests.entry(interest.clone()).or_default();
        *wanted += 1;
        if *wanted == 1 {
            if let Ok(mut table) = self.fanout.table.write() {
                table.interests.entry(interest).or_default().insert(self.id);
            }
        }
    }

    /// One subscription less wants `interest`; the last one stops hearing it.
    pub fn stop_listening(&mut self, interest: &Interest) {
        let Some(wanted) = self.interests.get_mut(interest) else { return };
        *wanted -= 1;
        if *wanted == 0 {
            self.interests.remove(interest);
            if let Ok(mut table) = self.fanout.table.write() {
                forget(&mut table, interest, self.id);
            }
        }
    }

    /// The next event, or `None` once the router is gone.
    pub async fn recv(&mut self) -> Option<Arc<Routed>> {
        self.rx.recv().await
    }

    pub fn lag_signal(&self) -> LagSignal {
        self.lag.clone()
    }
}

fn forget(table: &mut Table, interest: &Interest, id: u64) {
    if let Some(ids) = table.interests.get_mut(interest) {
        ids.remove(&id);
        if ids.is_empty() {
            table.interests.remove(interest);
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Ok(mut table) = self.fanout.table.write() {
            table.taps.remove(&self.id);
            for interest in self.interests.keys() {
                forget(&mut table, interest, self.id);
            }
        }
    }
}

impl FollowsLog for Fanout {
    const WHAT: &'static str = "the fan-out";

    /// The router keeps no state of the log: when the feed left it behind, every connection
    /// catches up from the store by its own cursors.
    async fn load(&self, _store: &EventStore) -> Result<(), StoreError> {
        self.lag_all();
        Ok(())
    }

    fn observe(&self, event: &Arc<RecordedEvent>) {
        self.route(event);
    }
}
