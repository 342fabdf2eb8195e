//! Node-local followers of the log: the live feed (one tailer per node), the fan-out that routes
//! it to WebSocket connections, and the credential directories (ended sessions and role changes,
//! custom roles, API keys) that let a request be authenticated without a database round trip.
//!
//! Every follower learns only from events, through one mechanism ([`follow`]): at start from
//! the store, then from the live feed; on the node that served a command, from the command's own
//! events at its commit, before the answer ([`OwnCommits`], a commit observer of the store); and
//! ended credentials from the `NOTIFY` the log's trigger sends at their commit
//! ([`announcements`]). Everything here stops when the node stops ([`Live::stop`]).

pub mod announcements;
pub mod api_keys;
pub mod changes;
pub mod fanout;
pub mod feed;
pub mod follow;
pub mod presence;
pub mod revocations;
pub mod roles;
pub mod signals;
pub mod viewers;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parley_eventstore::{CommitObserver, RecordedEvent, StoreError};
use tokio::sync::watch;
use tokio::task::JoinSet;

use self::api_keys::ApiKeyDirectory;
use self::fanout::Fanout;
use self::feed::LiveFeed;
use self::follow::follow;
use self::presence::Presence;
use self::revocations::Revocations;
use self::roles::RoleDirectory;
use self::signals::Signals;
use self::viewers::Viewers;
use crate::app::App;

/// How long [`Live::stop`] waits for its tasks before leaving them.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The node's followers, shared by every request and connection.
#[derive(Clone)]
pub struct Live {
    pub feed: LiveFeed,
    /// The feed routed to each WebSocket connection by what it subscribed to.
    pub fanout: Fanout,
    /// Ended sessions and role changes: tokens are refused without a database round trip.
    pub revocations: Revocations,
    /// Custom roles' permissions: a token's roles resolve without a database round trip.
    pub roles: RoleDirectory,
    /// API keys: a `pk_...` bearer is checked without a database round trip once known.
    pub api_keys: ApiKeyDirectory,
    /// Signals between users (WebRTC, media state, typing), relayed through every node.
    pub signals: Signals,
    /// Who is online, across the nodes.
    pub presence: Presence,
    /// Who watches which stream, across the nodes.
    pub viewers: Viewers,
    /// Kept alive as long as the followers: the store tells it of this node's own commits.
    own_commits: Arc<dyn CommitObserver>,
    stopping: Stopping,
    /// Tells WebSocket connections to close (before the followers stop, so that requests still
    /// draining are checked against current credentials).
    closing: watch::Sender<bool>,
}

impl Live {
    /// Starts every follower of `app`'s log; `capacity` events are kept for slow followers.
    pub async fn start(app: &App, capacity: usize, presence_ttl: Duration) -> Result<Self, StoreError> {
        let stopping = Stopping::new();
        let store = &app.store;
        let feed = LiveFeed::start(store.clone(), capacity, stopping.clone()).await?;
        let revocations = follow(Revocations::default(), store, &feed, &stopping).await?;
        let roles = follow(RoleDirectory::default(), store, &feed, &stopping).await?;
        let api_keys = follow(ApiKeyDirectory::new(app.commands.clone()), store, &feed, &stopping).await?;
        let fanout = follow(Fanout::new(capacity), store, &feed, &stopping).await?;
        announcements::listen(store.pool(), revocations.clone(), api_keys.clone(), &stopping).await?;
        let signals = Signals::start(store.pool(), &stopping).await?;
        let presence = Presence::start(store.pool(), signals.clone(), presence_ttl, &stopping);
        let clock = store.clone();
        let viewers = Viewers::start(store.pool(), presence_ttl, Arc::new(move || clock.now()), &stopping);
        let own_commits: Arc<dyn CommitObserver> = Arc::new(OwnCommits {
            revocations: revocations.clone(),
            roles: roles.clone(),
            api_keys: api_keys.clone(),
        });
        store.observe_commits(&own_commits);
        let closing = watch::channel(false).0;
        Ok(Self {
            feed,
            fanout,
            revocations,
            roles,
            api_keys,
            signals,
            presence,
            viewers,
            own_commits,
            stopping,
            closing,
        })
    }

    /// Completes when the node closes its WebSocket connections (it is stopping).
    pub fn closing(&self) -> StopSignal {
        StopSignal(self.closing.subscribe())
    }

    /// Tells every WebSocket connection of the node to close.
    pub fn close_connections(&self) {
        let _ = self.closing.send(true);
    }

    /// Closes the connections, stops every follower and waits (a bounded time) until they have.
    pub async fn stop(&self) {
        self.close_connections();
        self.stopping.stop(STOP_GRACE).await;
    }

    /// The observer of this node's own commits (for tests of it).
    pub fn own_commits(&self) -> &Arc<dyn CommitObserver> {
        &self.own_commits
    }
}

/// Hands the node's own committed events to its credential directories before the command
/// answers: a logout, a revoked key or a changed role applies to the very next request here.
struct OwnCommits {
    revocations: Revocations,
    roles: RoleDirectory,
    api_keys: ApiKeyDirectory,
}

impl CommitObserver for OwnCommits {
    fn wants(&self, event_type: &str) -> bool {
        Revocations::wants(event_type)
            || RoleDirectory::wants(event_type)
            || ApiKeyDirectory::wants(event_type)
    }

    fn committed(&self, event: &RecordedEvent) {
        let event = Arc::new(event.clone());
        self.revocations.observe(&event);
        self.roles.observe(&event);
        self.api_keys.observe(&event);
    }
}

/// The tasks of the node's followers, and the signal that stops them.
#[derive(Clone)]
pub struct Stopping {
    signal: watch::Sender<bool>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

/// Completes when the node stops.
#[derive(Clone)]
pub struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    pub async fn stopped(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}

impl Stopping {
    fn new() -> Self {
        Self { signal: watch::channel(false).0, tasks: Arc::default() }
    }

    pub fn signal(&self) -> StopSignal {
        StopSignal(self.signal.subscribe())
    }

    /// Runs `task` until it ends; it is handed the signal to end on.
    pub fn spawn<F, Fut>(&self, task: F)
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let future = task(self.signal());
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.spawn(future);
        }
    }

    async fn stop(&self, grace: Duration) {
        let _ = self.signal.send(true);
        let mut tasks = match self.tasks.lock() {
            Ok(mut tasks) => std::mem::take(&mut *tasks),
            Err(_) => return,
        };
        let all_ended = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all_ended).await.is_err() {
            tracing::warn!("live followers did not stop in time");
        }
    }
}
