//! Ended sessions, in memory: checking a token costs no database round trip. Fed by this node's
//! live feed (every node learns of a logout or revocation from the log within moments) and, on
//! the node that served a logout, directly before it answers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use parley_eventstore::{EventStore, RecordedEvent, StoreError};
use uuid::Uuid;

use super::auth::ACCESS_TTL;
use super::live::{follow, FollowsLog, LiveFeed};

pub const SESSION_ENDED: &str = "SessionEnded";
pub const USER_ROLES_CHANGED: &str = "UserRolesChanged";

/// How long a revocation is remembered: past it, every access token of the session has expired.
fn retention() -> Duration {
    Duration::from_secs(ACCESS_TTL as u64 + 120)
}

#[derive(Clone, Default)]
pub struct Revocations {
    ended: Arc<RwLock<HashMap<Uuid, Instant>>>,
    /// Users whose roles changed, with the user stream version of the change: tokens issued
    /// before it carry stale roles and are refused (the client refreshes).
    roles_changed: Arc<RwLock<HashMap<Uuid, (i64, Instant)>>>,
}

impl Revocations {
    /// Starts following the log: the sessions ended recently enough that their access tokens
    /// could still be valid, then every new ending.
    pub async fn start(store: &EventStore, live: &LiveFeed) -> Result<Self, StoreError> {
        follow(Self::default(), store, live).await
    }

    async fn load_recent(&self, store: &EventStore) -> Result<(), StoreError> {
        let rows: Vec<(Option<String>,)> = sqlx::query_as(
            "SELECT payload->>'session_id' FROM events \
             WHERE event_type = $1 AND recorded_at > now() - make_interval(secs => $2)",
        )
        .bind(SESSION_ENDED)
        .bind(retention().as_secs_f64())
        .fetch_all(store.pool())
        .await?;
        for id in rows.into_iter().filter_map(|(s,)| s?.parse().ok()) {
            self.revoke(id);
        }
        let changed: Vec<(String, i64)> = sqlx::query_as(
            "SELECT stream_id, max(version) FROM events \
             WHERE event_type = $1 AND recorded_at > now() - make_interval(secs => $2) GROUP BY stream_id",
        )
        .bind(USER_ROLES_CHANGED)
        .bind(retention().as_secs_f64())
        .fetch_all(store.pool())
        .await?;
        for (user, version) in changed {
            if let Ok(user) = user.parse() {
                self.change_roles(user, version);
            }
        }
        Ok(())
    }

    /// Remembers that `user`'s roles changed at `version` of their stream.
    pub fn change_roles(&self, user: Uuid, version: i64) {
        if let Ok(mut changed) = self.roles_changed.write() {
            let now = Instant::now();
            changed.retain(|_, (_, at)| now.duration_since(*at) < retention());
            let entry = changed.entry(user).or_insert((version, now));
            if entry.0 <= version {
                *entry = (version, now);
            }
        }
    }

    /// Whether a token of `user` issued at their stream version `token_version` predates a role change.
    pub fn roles_changed_since(&self, user: Uuid, token_version: i64) -> bool {
        self.roles_changed
            .read()
            .map(|c| c.get(&user).is_some_and(|(v, _)| *v > token_version))
            .unwrap_or(true)
    }

    /// Takes note of a `SessionEnded` or `UserRolesChanged` event.
    pub fn observe(&self, event: &RecordedEvent) {
        if event.event_type == USER_ROLES_CHANGED {
            if let Ok(user) = event.stream_id.parse() {
                self.change_roles(user, event.version);
            }
        }
        if event.event_type == SESSION_ENDED {
            if let Some(id) =
                event.payload.get("session_id").and_then(|v| v.as_str()).and_then(|s| s.parse().ok())
            {
                self.revoke(id);
            }
        }
    }

    pub fn revoke(&self, session: Uuid) {
        if let Ok(mut ended) = self.ended.write() {
            let now = Instant::now();
            ended.retain(|_, at| now.duration_since(*at) < retention());
            ended.insert(session, now);
        }
    }

    pub fn is_revoked(&self, session: Uuid) -> bool {
        self.ended.read().map(|e| e.contains_key(&session)).unwrap_or(true)
    }
}

impl FollowsLog for Revocations {
    const WHAT: &'static str = "revocations";

    async fn load(&self, store: &EventStore) -> Result<(), StoreError> {
        self.load_recent(store).await
    }

    fn observe(&self, event: &RecordedEvent) {
        Revocations::observe(self, event);
    }
}

/// The channel on which the log's trigger announces ended credentials at commit.
const REVOCATIONS_CHANNEL: &str = "parley_revocations";

/// One announcement of [`REVOCATIONS_CHANNEL`].
#[derive(serde::Deserialize)]
struct Announced {
    event_type: String,
    account_id: Uuid,
    stream_id: String,
    version: i64,
    session_id: Option<Uuid>,
    api_key_id: Option<Uuid>,
}

/// Listens for ended credentials announced at commit: sessions, role changes and API keys reach
/// this node in milliseconds, even while the log's commit-safe feed waits behind an old open
/// transaction somewhere in the cluster. The feed stays the backstop: an announcement lost while
/// reconnecting still arrives through it.
pub async fn listen(
    pool: &sqlx::PgPool,
    revocations: Revocations,
    api_keys: super::api_keys::ApiKeyDirectory,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(REVOCATIONS_CHANNEL).await?;
    tokio::spawn(async move {
        loop {
            let received = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                received = listener.recv() => received,
            };
            match received {
                Ok(n) => match serde_json::from_str::<Announced>(n.payload()) {
                    Ok(a) => match a.event_type.as_str() {
                        SESSION_ENDED => a.session_id.into_iter().for_each(|s| revocations.revoke(s)),
                        USER_ROLES_CHANGED => {
                            if let Ok(user) = a.stream_id.parse() {
                                revocations.change_roles(user, a.version);
                            }
                        }
                        super::api_keys::API_KEY_REVOKED => {
                            if let Some(key) = a.api_key_id {
                                api_keys.revoked(key, a.account_id, a.version);
                            }
                        }
                        _ => {}
                    },
                    Err(e) => tracing::warn!(error = %e, "unreadable revocation announcement"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "revocation listener lost its connection");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    });
    Ok(())
}
