//! Signals: what passes between users and is never stored as a fact (WebRTC offers, answers and
//! ICE candidates, mute and camera changes, typing). A signal is published once with `NOTIFY
//! parley_signals` and every node hands it to its own connections of the users it is for.
//! PostgreSQL refuses `NOTIFY` payloads of 8,000 bytes or more: a larger signal (a session
//! description can be 20 KiB) is put in the unlogged `signals` table and its id notified. Every
//! node drains its notifications at once (one stalled listener fills the cluster-wide queue for
//! everyone): delivering to a connection never waits, a full connection drops the signal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use parley_eventstore::StoreError;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::Stopping;

const CHANNEL: &str = "parley_signals";
/// The largest payload sent in the notification itself (PostgreSQL's limit is 8,000 bytes).
const INLINE: usize = 7_000;
/// Signals a connection may have waiting before more are dropped.
const QUEUE: usize = 256;
/// How often the notification queue's usage is measured for `/metrics`.
const GAUGE_EVERY: Duration = Duration::from_secs(5);

/// A frame for a connection, and whether it belongs to the `user` channel only (presence).
pub type Delivered = (Arc<str>, bool);

type Taps = HashMap<Uuid, HashMap<u64, mpsc::Sender<Delivered>>>;

/// This node's side of the signals: its connections by user, and the way out to every node.
#[derive(Clone)]
pub struct Signals {
    pool: PgPool,
    taps: Arc<RwLock<Taps>>,
    next: Arc<AtomicU64>,
}

/// A connection's signals; it stops receiving when dropped.
pub struct SignalTap {
    user: Uuid,
    id: u64,
    taps: Arc<RwLock<Taps>>,
    pub rx: mpsc::Receiver<Delivered>,
}

impl Drop for SignalTap {
    fn drop(&mut self) {
        if let Ok(mut taps) = self.taps.write() {
            if let Some(of_user) = taps.get_mut(&self.user) {
                of_user.remove(&self.id);
                if of_user.is_empty() {
                    taps.remove(&self.user);
                }
            }
        }
    }
}

impl Signals {
    /// Listens on `parley_signals` until the node stops.
    pub async fn start(pool: &PgPool, stopping: &Stopping) -> Result<Self, StoreError> {
        let signals = Self { pool: pool.clone(), taps: Arc::default(), next: Arc::default() };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        let node = signals.clone();
        stopping.spawn(move |mut stop| async move {
            let mut gauge = tokio::time::interval(GAUGE_EVERY);
            loop {
                tokio::select! {
                    _ = stop.stopped() => return,
                    _ = gauge.tick() => node.record_queue_usage().await,
                    received = listener.recv() => match received {
                        Ok(n) => node.received(n.payload()).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "signal listener lost its connection");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    },
                }
            }
        });
        Ok(signals)
    }

    /// The signals for `user` reaching this node, until the tap is dropped.
    pub fn tap(&self, user: Uuid) -> SignalTap {
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut taps) = self.taps.write() {
            taps.entry(user).or_default().insert(id, tx);
        }
        SignalTap { user, id, taps: self.taps.clone(), rx }
    }

    /// Sends `frame` to every connection of each of `to`, on every node.
    pub async fn publish(&self, to: &[Uuid], frame: Value) -> Result<(), sqlx::Error> {
        self.send(to, frame, false).await
    }

    /// Sends `frame` to the connections of each of `to` that follow their `user` channel.
    pub async fn publish_to_user_channel(&self, to: &[Uuid], frame: Value) -> Result<(), sqlx::Error> {
        self.send(to, frame, true).await
    }

    async fn send(&self, to: &[Uuid], frame: Value, user_channel: bool) -> Result<(), sqlx::Error> {
        let payload = json!({"to": to, "frame": frame, "user_channel": user_channel}).to_string();
        let notified = if payload.len() <= INLINE {
            payload
        } else {
            let (id,): (i64,) =
                sqlx::query_as("INSERT INTO signals (payload) VALUES ($1::jsonb) RETURNING id")
                    .bind(&payload)
                    .fetch_one(&self.pool)
                    .await?;
            format!("#{id}")
        };
        sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(notified).execute(&self.pool).await?;
        metrics::counter!("parley_signals_published_total").increment(1);
        Ok(())
    }

    /// One notification: the signal itself, or the id of a large one.
    async fn received(&self, payload: &str) {
        let payload = match payload.strip_prefix('#').and_then(|id| id.parse::<i64>().ok()) {
            Some(id) => {
                let row: Result<Option<(String,)>, _> =
                    sqlx::query_as("SELECT payload::text FROM signals WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await;
                match row {
                    Ok(Some((payload,))) => payload,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read a large signal");
                        return;
                    }
                }
            }
            None => payload.to_owned(),
        };
        let Ok(signal) = serde_json::from_str::<Value>(&payload) else { return };
        let frame: Arc<str> = signal["frame"].to_string().into();
        let user_channel = signal["user_channel"].as_bool().unwrap_or(false);
        let Ok(taps) = self.taps.read() else { return };
        for user in
            signal["to"].as_array().into_iter().flatten().filter_map(|u| u.as_str()?.parse::<Uuid>().ok())
        {
            for tap in taps.get(&user).into_iter().flat_map(|t| t.values()) {
                if tap.try_send((frame.clone(), user_channel)).is_err() {
                    metrics::counter!("parley_signals_dropped_total").increment(1);
                }
            }
        }
    }

    async fn record_queue_usage(&self) {
        if let Ok((usage,)) =
            sqlx::query_as::<_, (f64,)>("SELECT pg_notification_queue_usage()").fetch_one(&self.pool).await
        {
            metrics::gauge!("parley_pg_notification_queue_usage").set(usage);
        }
    }
}
