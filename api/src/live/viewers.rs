//! Live viewer counts of streams. A viewer's subscription keeps a row in `stream_viewers`
//! (hosts, holders of `spaces.manage`, keep none: they are not viewers); a stream's count is its
//! distinct users there, so several tabs count once and the count can never go below zero.
//! Every second each node counts the streams its connections watch, in one statement, and tells
//! its watchers when a count changed: at most one `viewer_update` a second per stream, and every
//! node converges on the same count within about a second of the last change. The same tick
//! keeps each stream's peak (read when the stream ends) and ends the subscriptions of viewers
//! whose grant ended (`access_ended`). A viewer who leaves is deleted at once (batched with
//! whoever leaves at the same moment), so the count a node takes next is already right.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::Stopping;

/// How often counts are taken and sent.
pub const TICK: Duration = Duration::from_secs(1);
/// Notes a connection may have waiting before more are dropped (a newer count follows).
const QUEUE: usize = 64;

/// What a watching connection hears about a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewerNote {
    Count {
        stream_id: Uuid,
        count: i64,
    },
    /// The viewer's grant ended: the subscription ends.
    AccessEnded {
        stream_id: Uuid,
    },
}

/// One connection's subscription to a stream.
struct Watch {
    user: Uuid,
    /// Counted (a viewer), or only told (a host).
    viewer: bool,
    tx: mpsc::Sender<ViewerNote>,
}

#[derive(Default)]
struct State {
    /// By stream, then connection.
    watching: HashMap<Uuid, HashMap<Uuid, Watch>>,
    /// Subscriptions that ended, their rows not yet deleted.
    left: Vec<(Uuid, Uuid)>,
    /// The count each stream's watchers here last heard.
    told: HashMap<Uuid, i64>,
}

/// A node's side of the viewer counts.
#[derive(Clone)]
pub struct Viewers {
    pool: PgPool,
    node: String,
    ttl: Duration,
    state: Arc<Mutex<State>>,
    /// Rung when a viewer leaves: their rows go at once (in one statement however many left
    /// together), so the other nodes' next count no longer sees them.
    leaving: Arc<tokio::sync::Notify>,
    /// Now, for grants (the store's clock: tests move it).
    now: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
}

/// A connection's notes about the streams it watches; it stops hearing when dropped.
pub struct ViewerTap {
    pub rx: mpsc::Receiver<ViewerNote>,
    tx: mpsc::Sender<ViewerNote>,
}

impl Viewers {
    /// Starts the counter, which ticks every second until the node stops, then deletes this
    /// node's rows.
    pub fn start(
        pool: &PgPool,
        ttl: Duration,
        now: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
        stopping: &Stopping,
    ) -> Self {
        let viewers = Self {
            pool: pool.clone(),
            node: format!("node-{}", Uuid::now_v7().simple()),
            ttl,
            state: Default::default(),
            leaving: Default::default(),
            now,
        };
        let counter = viewers.clone();
        stopping.spawn(move |mut stop| async move {
            let mut every = tokio::time::interval(TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut ticks: u64 = 0;
            loop {
                tokio::select! {
                    _ = stop.stopped() => return counter.leave().await,
                    _ = counter.leaving.notified() => counter.forget_left().await,
                    _ = every.tick() => {
                        ticks += 1;
                        counter.tick(ticks).await;
                    }
                }
            }
        });
        viewers
    }

    /// A tap for one connection's notes.
    pub fn tap() -> ViewerTap {
        let (tx, rx) = mpsc::channel(QUEUE);
        ViewerTap { rx, tx }
    }

    /// `connection` of `user` watches `stream`: counted unless a host. Answers the count now.
    pub async fn watch(
        &self,
        tap: &ViewerTap,
        connection: Uuid,
        stream: Uuid,
        user: Uuid,
        viewer: bool,
    ) -> i64 {
        if let Ok(mut state) = self.state.lock() {
            let watch = Watch { user, viewer, tx: tap.tx.clone() };
            state.watching.entry(stream).or_default().insert(connection, watch);
        }
        if viewer {
            let inserted = sqlx::query(
                "INSERT INTO stream_viewers (connection_id, stream_id, user_id, node, seen_at) \
                 VALUES ($1, $2, $3, $4, now()) ON CONFLICT (connection_id, stream_id) DO UPDATE SET seen_at = now()",
            )
            .bind(connection)
            .bind(stream)
            .bind(user)
            .bind(&self.node)
            .execute(&self.pool)
            .await;
            if let Err(e) = inserted {
                tracing::warn!(error = %e, "could not record a stream viewer");
            }
        }
        self.counts(&[stream]).await.get(&stream).copied().unwrap_or(0)
    }

    /// `connection` stops watching `stream` (unsubscribed, or closed): its row goes with the
    /// next tick.
    pub fn unwatch(&self, connection: Uuid, stream: Uuid) {
        if let Ok(mut guard) = self.state.lock() {
            let state = &mut *guard;
            if let Some(watchers) = state.watching.get_mut(&stream) {
                if watchers.remove(&connection).is_some_and(|w| w.viewer) {
                    state.left.push((connection, stream));
                    self.leaving.notify_one();
                }
                if watchers.is_empty() {
                    state.watching.remove(&stream);
                    state.told.remove(&stream);
                }
            }
        }
    }

    /// Distinct viewers of each of `streams` now, on every node.
    pub async fn counts(&self, streams: &[Uuid]) -> HashMap<Uuid, i64> {
        let rows: Result<Vec<(Uuid, i64)>, _> = sqlx::query_as(
            "SELECT stream_id, count(DISTINCT user_id) FROM stream_viewers \
             WHERE stream_id = ANY($1) AND seen_at > now() - make_interval(secs => $2) GROUP BY stream_id",
        )
        .bind(streams)
        .bind(self.ttl.as_secs_f64())
        .fetch_all(&self.pool)
        .await;
        match rows {
            Ok(rows) => rows.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not count stream viewers");
                HashMap::new()
            }
        }
    }

    /// Distinct viewers of `stream` other than `user` (for a join against `max_participants`).
    pub async fn others(&self, stream: Uuid, user: Uuid) -> Result<i64, sqlx::Error> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(DISTINCT user_id) FROM stream_viewers WHERE stream_id = $1 AND user_id <> $2 \
               AND seen_at > now() - make_interval(secs => $3)",
        )
        .bind(stream)
        .bind(user)
        .bind(self.ttl.as_secs_f64())
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    /// One second of the counter: rows of those who left go, live rows are refreshed (every
    /// quarter of the TTL), counts are taken and told where they changed, peaks are kept, and
    /// viewers whose access ended are told so.
    #[tracing::instrument(skip_all, fields(streams))]
    async fn tick(&self, n: u64) {
        self.forget_left().await;
        let refresh_every = (self.ttl.as_secs() / 4).max(1);
        if n.is_multiple_of(refresh_every) {
            self.refresh().await;
        }
        let streams: Vec<Uuid> = match self.state.lock() {
            Ok(state) => state.watching.keys().copied().collect(),
            Err(_) => return,
        };
        tracing::Span::current().record("streams", streams.len());
        if streams.is_empty() {
            return;
        }
        let counts = self.counts(&streams).await;
        self.keep_peaks(&counts).await;
        let mut notes = Vec::new();
        if let Ok(mut state) = self.state.lock() {
            for stream in &streams {
                let count = counts.get(stream).copied().unwrap_or(0);
                if state.told.get(stream) == Some(&count) {
                    continue;
                }
                state.told.insert(*stream, count);
                for watch in state.watching.get(stream).into_iter().flat_map(|w| w.values()) {
                    notes.push((watch.tx.clone(), ViewerNote::Count { stream_id: *stream, count }));
                }
            }
        }
        for (tx, note) in notes {
            // A full queue drops this count: the next change brings a newer one.
            let _ = tx.try_send(note);
        }
        self.end_lost_access().await;
    }

    async fn forget_left(&self) {
        let left = match self.state.lock() {
            Ok(mut state) => std::mem::take(&mut state.left),
            Err(_) => return,
        };
        if left.is_empty() {
            return;
        }
        let (connections, streams): (Vec<Uuid>, Vec<Uuid>) = left.into_iter().unzip();
        let deleted = sqlx::query(
            "DELETE FROM stream_viewers v USING unnest($1::uuid[], $2::uuid[]) AS l(connection_id, stream_id) \
             WHERE v.connection_id = l.connection_id AND v.stream_id = l.stream_id",
        )
        .bind(&connections)
        .bind(&streams)
        .execute(&self.pool)
        .await;
        if let Err(e) = deleted {
            tracing::warn!(error = %e, "could not delete the rows of stream viewers who left");
            if let Ok(mut state) = self.state.lock() {
                state.left.extend(connections.into_iter().zip(streams));
            }
        }
    }

    /// This node's viewers are alive (one statement), and rows of dead nodes are swept.
    async fn refresh(&self) {
        let live: Vec<Uuid> = match self.state.lock() {
            Ok(state) => state
                .watching
                .values()
                .flat_map(|w| w.iter().filter(|(_, w)| w.viewer).map(|(c, _)| *c))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect(),
            Err(_) => return,
        };
        if !live.is_empty() {
            let refreshed =
                sqlx::query("UPDATE stream_viewers SET seen_at = now() WHERE connection_id = ANY($1)")
                    .bind(&live)
                    .execute(&self.pool)
                    .await;
            if let Err(e) = refreshed {
                tracing::warn!(error = %e, "could not refresh stream viewers");
            }
        }
        let _ = sqlx::query("DELETE FROM stream_viewers WHERE seen_at < now() - make_interval(secs => $1)")
            .bind(self.ttl.as_secs_f64())
            .execute(&self.pool)
            .await;
    }

    async fn keep_peaks(&self, counts: &HashMap<Uuid, i64>) {
        let (streams, peaks): (Vec<Uuid>, Vec<i64>) =
            counts.iter().filter(|(_, n)| **n > 0).map(|(s, n)| (*s, *n)).unzip();
        if streams.is_empty() {
            return;
        }
        let kept = sqlx::query(
            "INSERT INTO stream_viewer_peaks (stream_id, peak) SELECT * FROM unnest($1::uuid[], $2::bigint[]) \
             ON CONFLICT (stream_id) DO UPDATE SET peak = greatest(stream_viewer_peaks.peak, EXCLUDED.peak)",
        )
        .bind(&streams)
        .bind(&peaks)
        .execute(&self.pool)
        .await;
        if let Err(e) = kept {
            tracing::warn!(error = %e, "could not keep stream viewer peaks");
        }
    }

    /// Viewers here whose grant to the stream's experience is no longer live (revoked, expired
    /// by the log or by the clock) are told, and stop being counted.
    async fn end_lost_access(&self) {
        let (connections, streams, users): (Vec<Uuid>, Vec<Uuid>, Vec<Uuid>) = match self.state.lock() {
            Ok(state) => {
                let mut out = (Vec::new(), Vec::new(), Vec::new());
                for (stream, watchers) in &state.watching {
                    for (connection, watch) in watchers.iter().filter(|(_, w)| w.viewer) {
                        out.0.push(*connection);
                        out.1.push(*stream);
                        out.2.push(watch.user);
                    }
                }
                out
            }
            Err(_) => return,
        };
        if connections.is_empty() {
            return;
        }
        let lost: Result<Vec<(Uuid, Uuid)>, _> = sqlx::query_as(
            "SELECT w.connection_id, w.stream_id FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) \
               AS w(connection_id, stream_id, user_id) \
             JOIN streams s ON s.id = w.stream_id \
             WHERE NOT EXISTS (SELECT 1 FROM access_grants g WHERE g.user_id = w.user_id \
               AND g.experience_id = s.experience_id AND g.status = 'active' \
               AND (g.expires_at IS NULL OR g.expires_at > $4))",
        )
        .bind(&connections)
        .bind(&streams)
        .bind(&users)
        .bind((self.now)())
        .fetch_all(&self.pool)
        .await;
        let lost = match lost {
            Ok(lost) => lost,
            Err(e) => {
                tracing::warn!(error = %e, "could not check stream viewers' access");
                return;
            }
        };
        for (connection, stream) in lost {
            let tx =
                self.state.lock().ok().and_then(|s| {
                    s.watching.get(&stream).and_then(|w| w.get(&connection)).map(|w| w.tx.clone())
                });
            self.unwatch(connection, stream);
            if let Some(tx) = tx {
                let _ = tx.try_send(ViewerNote::AccessEnded { stream_id: stream });
            }
        }
    }

    /// The node stops: its rows go now, not a TTL later.
    async fn leave(&self) {
        let _ = sqlx::query("DELETE FROM stream_viewers WHERE node = $1")
            .bind(&self.node)
            .execute(&self.pool)
            .await;
    }
}
