//! Ended sessions and role changes, in memory: checking a token costs no database round trip.
//! Fed like every follower ([`super::follow`]): the recent ones from the store at start, then the
//! live feed; this node's own at their commit; every node's at their commit through
//! [`super::announcements`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use parley_eventstore::{EventStore, RecordedEvent, StoreError};
use uuid::Uuid;

use super::changes::{Changed, Changes};
use super::follow::FollowsLog;
use crate::http::auth::ACCESS_TTL;

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
    /// Bumped at each ended session, for the WebSocket connections that wait for theirs.
    ended_changes: Changes,
}

impl Revocations {
    /// The event types it takes note of.
    pub fn wants(event_type: &str) -> bool {
        event_type == SESSION_ENDED || event_type == USER_ROLES_CHANGED
    }

    /// The sessions ended recently enough that their access tokens could still be valid, and the
    /// recent role changes.
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
        self.ended_changes.bump();
    }

    /// Wakes at each session ended from now on (then ask [`Self::is_revoked`]).
    pub fn ended_changes(&self) -> Changed {
        self.ended_changes.subscribe()
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

    fn observe(&self, event: &Arc<RecordedEvent>) {
        Revocations::observe(self, event);
    }
}
