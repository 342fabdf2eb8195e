//! Presence: a user is online while any of their connections lives, on any node. Each
//! connection keeps a row in `presence_connections`. A node refreshes the rows of all its live
//! connections in one statement every quarter of the TTL (ten thousand idle connections cost one
//! `UPDATE` every few seconds, not one per connection), and deletes the rows of the connections
//! that closed in batches (ten thousand clients leaving at once are a few statements, not ten
//! thousand competing for the pool); a node that stops deletes its own rows, one that dies stops
//! refreshing them, and any node sweeps rows older than the TTL. The user's first connection
//! announces `online`, the end of their last one `offline` (with `last_seen_at`), only to users
//! who share a conversation with them, through the signals.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use super::signals::Signals;
use super::Stopping;

/// How a node keeps presence.
#[derive(Clone)]
pub struct Presence {
    pool: PgPool,
    signals: Signals,
    node: String,
    ttl: Duration,
    connections: Arc<Mutex<Connections>>,
    /// Rung when a connection closes.
    closing: Arc<Notify>,
}

/// This node's connections.
#[derive(Default)]
struct Connections {
    /// Open: their rows are refreshed.
    live: HashSet<Uuid>,
    /// Closed, their rows not yet deleted.
    closed: Vec<Uuid>,
}

impl Presence {
    /// Starts the keeper, which deletes closed connections' rows as they close, refreshes this
    /// node's rows and sweeps dead ones every quarter of the TTL, and deletes all of this node's
    /// rows when it stops.
    pub fn start(pool: &PgPool, signals: Signals, ttl: Duration, stopping: &Stopping) -> Self {
        let presence = Self {
            pool: pool.clone(),
            signals,
            node: format!("node-{}", Uuid::now_v7().simple()),
            ttl,
            connections: Default::default(),
            closing: Default::default(),
        };
        let keeper = presence.clone();
        stopping.spawn(move |mut stop| async move {
            let mut every = tokio::time::interval(keeper.ttl / 4);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.stopped() => return keeper.leave().await,
                    _ = keeper.closing.notified() => keeper.forget_closed().await,
                    _ = every.tick() => {
                        keeper.forget_closed().await;
                        keeper.refresh().await;
                        keeper.sweep().await;
                    }
                }
            }
        });
        presence
    }

    /// How often a connection pings a quiet client (it is closed when unheard for three times that).
    pub fn ping_every(&self) -> Duration {
        self.ttl / 3
    }

    fn ttl_secs(&self) -> f64 {
        self.ttl.as_secs_f64()
    }

    /// A connection of `user` opened: online (announced if it is their first).
    pub async fn connected(&self, connection: Uuid, user: Uuid, account: Uuid) {
        if let Ok(mut connections) = self.connections.lock() {
            connections.live.insert(connection);
        }
        let inserted: Result<(bool,), _> = sqlx::query_as(
            "WITH others AS (SELECT count(*) AS n FROM presence_connections \
                             WHERE user_id = $2 AND seen_at > now() - make_interval(secs => $5)) \
             INSERT INTO presence_connections (connection_id, user_id, account_id, node, seen_at) \
             SELECT $1, $2, $3, $4, now() FROM others RETURNING (SELECT n = 0 FROM others)",
        )
        .bind(connection)
        .bind(user)
        .bind(account)
        .bind(&self.node)
        .bind(self.ttl_secs())
        .fetch_one(&self.pool)
        .await;
        match inserted {
            Ok((true,)) => self.announce(user, "online", None).await,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not record a connection's presence"),
        }
    }

    /// The connection closed: its row goes with the next batch (offline if it was the user's last).
    pub fn disconnected(&self, connection: Uuid) {
        if let Ok(mut connections) = self.connections.lock() {
            connections.live.remove(&connection);
            connections.closed.push(connection);
        }
        self.closing.notify_one();
    }

    /// This node's connections are alive: one statement for all of them.
    #[tracing::instrument(skip_all, fields(connections))]
    async fn refresh(&self) {
        let live: Vec<Uuid> = match self.connections.lock() {
            Ok(connections) => connections.live.iter().copied().collect(),
            Err(_) => return,
        };
        tracing::Span::current().record("connections", live.len());
        if live.is_empty() {
            return;
        }
        let refreshed =
            sqlx::query("UPDATE presence_connections SET seen_at = now() WHERE connection_id = ANY($1)")
                .bind(&live)
                .execute(&self.pool)
                .await;
        if let Err(e) = refreshed {
            tracing::warn!(error = %e, "could not refresh this node's presence");
        }
    }

    /// Deletes the rows of the connections closed since the last batch; announces the users
    /// left with none. A batch that fails is tried again with the next.
    #[tracing::instrument(skip_all, fields(connections))]
    async fn forget_closed(&self) {
        let closed = match self.connections.lock() {
            Ok(mut connections) => std::mem::take(&mut connections.closed),
            Err(_) => return,
        };
        tracing::Span::current().record("connections", closed.len());
        if closed.is_empty() {
            return;
        }
        // The statement's snapshot still holds the rows it deletes: the others are looked for
        // among the rows it keeps.
        let gone: Result<Vec<(Uuid, DateTime<Utc>)>, _> = sqlx::query_as(
            "WITH gone AS (DELETE FROM presence_connections WHERE connection_id = ANY($1) RETURNING user_id) \
             SELECT DISTINCT g.user_id, now() FROM gone g \
             WHERE NOT EXISTS (SELECT 1 FROM presence_connections p \
                               WHERE p.user_id = g.user_id AND p.connection_id <> ALL($1) \
                                 AND p.seen_at > now() - make_interval(secs => $2))",
        )
        .bind(&closed)
        .bind(self.ttl_secs())
        .fetch_all(&self.pool)
        .await;
        match gone {
            Ok(users) => self.went_offline(users).await,
            Err(e) => {
                tracing::warn!(error = %e, "could not delete closed connections' presence");
                if let Ok(mut connections) = self.connections.lock() {
                    connections.closed.extend(closed);
                }
            }
        }
    }

    /// The node stops: its connections' rows go, and the users left with none are announced.
    async fn leave(&self) {
        let gone: Result<Vec<(Uuid, DateTime<Utc>)>, _> = sqlx::query_as(
            "WITH gone AS (DELETE FROM presence_connections WHERE node = $1 RETURNING user_id) \
             SELECT DISTINCT g.user_id, now() FROM gone g \
             WHERE NOT EXISTS (SELECT 1 FROM presence_connections p \
                               WHERE p.user_id = g.user_id AND p.node <> $1 \
                                 AND p.seen_at > now() - make_interval(secs => $2))",
        )
        .bind(&self.node)
        .bind(self.ttl_secs())
        .fetch_all(&self.pool)
        .await;
        match gone {
            Ok(users) => self.went_offline(users).await,
            Err(e) => tracing::warn!(error = %e, "could not delete this node's presence as it stops"),
        }
    }

    /// Each of `users` has no connection left since the time given with them.
    async fn went_offline(&self, users: Vec<(Uuid, DateTime<Utc>)>) {
        if users.is_empty() {
            return;
        }
        self.last_seen(&users).await;
        for (user, at) in users {
            self.announce(user, "offline", Some(at)).await;
        }
    }

    /// Removes the rows of dead nodes' connections; announces the users left with none.
    async fn sweep(&self) {
        let swept: Result<Vec<(Uuid, DateTime<Utc>)>, _> = sqlx::query_as(
            "WITH gone AS (DELETE FROM presence_connections \
                           WHERE seen_at < now() - make_interval(secs => $1) RETURNING user_id, seen_at) \
             SELECT g.user_id, max(g.seen_at) FROM gone g \
             WHERE NOT EXISTS (SELECT 1 FROM presence_connections p WHERE p.user_id = g.user_id \
                               AND p.seen_at > now() - make_interval(secs => $1)) \
             GROUP BY g.user_id",
        )
        .bind(self.ttl_secs())
        .fetch_all(&self.pool)
        .await;
        match swept {
            Ok(users) => self.went_offline(users).await,
            Err(e) => tracing::debug!(error = %e, "could not sweep presence"),
        }
    }

    /// Keeps when each user was last seen, for their profiles: one statement for them all.
    async fn last_seen(&self, users: &[(Uuid, DateTime<Utc>)]) {
        let (ids, at): (Vec<Uuid>, Vec<DateTime<Utc>>) = users.iter().copied().unzip();
        let kept = sqlx::query(
            "INSERT INTO presence_last_seen (user_id, last_seen_at) \
             SELECT * FROM unnest($1::uuid[], $2::timestamptz[]) \
             ON CONFLICT (user_id) DO UPDATE \
             SET last_seen_at = GREATEST(presence_last_seen.last_seen_at, excluded.last_seen_at)",
        )
        .bind(&ids)
        .bind(&at)
        .execute(&self.pool)
        .await;
        if let Err(e) = kept {
            tracing::warn!(error = %e, "could not keep when users were last seen");
        }
    }

    /// Who shares a conversation with `user`.
    async fn audience(&self, user: Uuid) -> Vec<Uuid> {
        sqlx::query_as::<_, (Uuid,)>(
            "SELECT DISTINCT other.user_id FROM conversation_members mine \
             JOIN conversation_members other ON other.conversation_id = mine.conversation_id \
             WHERE mine.user_id = $1 AND other.user_id <> $1",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await
        .map(|rows| rows.into_iter().map(|(u,)| u).collect())
        .unwrap_or_default()
    }

    async fn announce(&self, user: Uuid, status: &str, last_seen_at: Option<DateTime<Utc>>) {
        let audience = self.audience(user).await;
        if audience.is_empty() {
            return;
        }
        let reads = parley_projections::Reads::new(&self.pool, None);
        let name = parley_projections::read_models::users::query::name_of(&reads, user).await.ok().flatten();
        let frame = json!({
            "type": "presence", "user_id": user, "name": name, "status": status, "last_seen_at": last_seen_at,
        });
        if let Err(e) = self.signals.publish_to_user_channel(&audience, frame).await {
            tracing::warn!(error = %e, "could not announce presence");
        }
    }

    /// The users sharing a conversation with `user` who are online now.
    pub async fn roster(&self, user: Uuid) -> Vec<Uuid> {
        let audience = self.audience(user).await;
        sqlx::query_as::<_, (Uuid,)>(
            "SELECT DISTINCT user_id FROM presence_connections \
             WHERE user_id = ANY($1) AND seen_at > now() - make_interval(secs => $2)",
        )
        .bind(&audience)
        .bind(self.ttl_secs())
        .fetch_all(&self.pool)
        .await
        .map(|rows| rows.into_iter().map(|(u,)| u).collect())
        .unwrap_or_default()
    }
}
