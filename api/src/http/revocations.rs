//! Ended sessions, in memory: checking a token costs no database round trip. Fed by this node's
//! live feed (every node learns of a logout or revocation from the log within moments) and, on
//! the node that served a logout, directly before it answers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use parley_eventstore::{EventStore, RecordedEvent, StoreError};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::auth::ACCESS_TTL;
use super::live::LiveFeed;

pub const SESSION_ENDED: &str = "SessionEnded";

/// How long a revocation is remembered: past it, every access token of the session has expired.
fn retention() -> Duration {
    Duration::from_secs(ACCESS_TTL as u64 + 120)
}

#[derive(Clone, Default)]
pub struct Revocations {
    ended: Arc<RwLock<HashMap<Uuid, Instant>>>,
}

impl Revocations {
    /// Starts following the log: subscribes to the live feed first, then loads the sessions ended
    /// recently enough that their access tokens could still be valid (so nothing falls between).
    pub async fn start(store: &EventStore, live: &LiveFeed) -> Result<Self, StoreError> {
        let revocations = Self::default();
        let mut feed = live.subscribe();
        revocations.load_recent(store).await?;
        let (following, store) = (revocations.clone(), store.clone());
        tokio::spawn(async move {
            loop {
                match feed.recv().await {
                    Ok(event) => following.observe(&event),
                    Err(RecvError::Lagged(_)) => {
                        if let Err(e) = following.load_recent(&store).await {
                            tracing::warn!(error = %e, "could not reload revocations");
                        }
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(revocations)
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
        Ok(())
    }

    /// Takes note of a `SessionEnded` event.
    pub fn observe(&self, event: &RecordedEvent) {
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
