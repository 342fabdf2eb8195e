//! Queries served from a streaming replica (`DATABASE_REPLICA_URL`).
//!
//! The read models and their checkpoints (`projection_generations`) are tables like any other, so
//! a physical replica holds a consistent copy of both: a query that waits for `X-Min-Position`
//! on the replica waits on the replica's own checkpoints (polled: a hot standby refuses
//! `LISTEN`), and read-your-writes holds there as it does on the primary.
//!
//! A follower looks at the replica every [`EVERY`]: whether it answers, is still a standby, and
//! how far its replay is behind the primary in time. The lag is measured against the primary's
//! own WAL position sampled each tick, not against the replica's receive position (which stands
//! still when its connection to the primary breaks): the replica is as fresh as the primary was
//! at the newest sample whose WAL position it has replayed. Queries go to the replica while it
//! answers and is at most `max_lag` behind, to the primary otherwise. A query the replica fails
//! (a recovery conflict cancelled it, its connection broke, it reads an unlogged table such as
//! presence, which a standby refuses) is asked again of the primary by [`route_reads`]; a client
//! never sees a replica's failure as a 500.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use parley_eventstore::db;
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::http::state::AppState;

/// How often the follower looks at the replica.
pub const EVERY: Duration = Duration::from_millis(250);
/// How much of the primary's WAL history the follower keeps to date the replica's replay: a lag
/// longer than this is reported as at least this.
const HISTORY: Duration = Duration::from_secs(60);
/// How long a query waits for one of the replica's connections before it goes to the primary.
const ACQUIRE: Duration = Duration::from_millis(500);

/// Where a query reads; set on a request by [`route_reads`], read by the `Reading` extractor
/// (absent: the primary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    Primary,
    Replica,
}

/// Marks a response whose failure was the database's, not the request's (unreachable, a recovery
/// conflict, read models not yet at the position asked for): another copy of the data may
/// answer it.
#[derive(Clone, Copy, Debug)]
pub struct TryAnotherCopy;

/// What the follower last saw of the replica.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ReplicaStatus {
    /// `up` (queries read there), `lagging` (answers, but further behind than allowed), `down`
    /// (does not answer, or is no longer a standby), `unknown` (not looked at yet).
    pub status: &'static str,
    /// How far the replica's replay is behind the primary, in seconds (none while down).
    pub lag_seconds: Option<f64>,
    /// Why it is down.
    pub error: Option<String>,
}

/// The replica: its pool and what the follower knows of it. Cheap to clone.
#[derive(Clone)]
pub struct Replica {
    pool: PgPool,
    max_lag: Duration,
    status: Arc<RwLock<ReplicaStatus>>,
}

impl Replica {
    /// Connects lazily: a replica that is down when the node starts is skipped until it answers.
    pub fn connect(url: &str, max_connections: u32, max_lag: Duration) -> anyhow::Result<Self> {
        let options = db::connect_options(url, "parley-replica").map_err(|e| {
            anyhow::anyhow!("DATABASE_REPLICA_URL is not a PostgreSQL connection string: {e}")
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE)
            .connect_lazy_with(options);
        let status = ReplicaStatus { status: "unknown", lag_seconds: None, error: None };
        Ok(Self { pool, max_lag, status: Arc::new(RwLock::new(status)) })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// How long a query waits on the replica for its `X-Min-Position` before the primary answers
    /// it: a replica further behind than that would be skipped anyway.
    pub fn max_lag(&self) -> Duration {
        self.max_lag
    }

    pub fn status(&self) -> ReplicaStatus {
        self.status.read().expect("replica status").clone()
    }

    /// Whether queries read from the replica now.
    pub fn usable(&self) -> bool {
        self.status.read().expect("replica status").status == "up"
    }

    /// Follows the replica until `stopped`: its status, lag and metrics every [`EVERY`].
    pub fn follow(&self, primary: PgPool, mut stopped: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut history = WalHistory::default();
            let mut every = tokio::time::interval(EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stopped.wait_for(|s| *s) => return,
                }
                let status = this.look(&primary, &mut history).await;
                this.publish(status);
            }
        })
    }

    /// One look: the primary's WAL position first, then the replica's replay position.
    async fn look(&self, primary: &PgPool, history: &mut WalHistory) -> ReplicaStatus {
        // The primary being down is not the replica's fault: keep the last samples and date
        // the replica against them.
        if let Ok((lsn,)) = sqlx::query_as::<_, (i64,)>("SELECT (pg_current_wal_lsn() - '0/0')::int8")
            .fetch_one(primary)
            .await
        {
            history.sample(Instant::now(), lsn);
        }
        let replica = sqlx::query_as::<_, (bool, Option<i64>)>(
            "SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0')::int8",
        )
        .fetch_one(&self.pool)
        .await;
        match replica {
            Err(e) => ReplicaStatus { status: "down", lag_seconds: None, error: Some(e.to_string()) },
            Ok((false, _)) => ReplicaStatus {
                status: "down",
                lag_seconds: None,
                error: Some("not a standby: it is no longer in recovery (promoted?)".into()),
            },
            Ok((true, replayed)) => {
                let lag = history.lag(Instant::now(), replayed.unwrap_or(0));
                let status = if lag <= self.max_lag { "up" } else { "lagging" };
                ReplicaStatus { status, lag_seconds: Some(lag.as_secs_f64()), error: None }
            }
        }
    }

    fn publish(&self, status: ReplicaStatus) {
        metrics::gauge!("parley_replica_up").set(if status.status == "up" { 1.0 } else { 0.0 });
        if let Some(lag) = status.lag_seconds {
            metrics::gauge!("parley_replica_lag_seconds").set(lag);
        }
        let mut current = self.status.write().expect("replica status");
        if current.status != status.status {
            match status.status {
                "up" => tracing::info!(lag_seconds = ?status.lag_seconds, "queries read from the replica"),
                _ => tracing::warn!(
                    status = status.status,
                    lag_seconds = ?status.lag_seconds,
                    error = ?status.error,
                    "queries read from the primary: the replica is skipped"
                ),
            }
        }
        *current = status;
    }
}

/// The primary's WAL position over the last [`HISTORY`], oldest first.
#[derive(Default)]
struct WalHistory(VecDeque<(Instant, i64)>);

impl WalHistory {
    fn sample(&mut self, at: Instant, lsn: i64) {
        self.0.push_back((at, lsn));
        while self.0.len() > 2 && self.0.front().is_some_and(|(t, _)| at.duration_since(*t) > HISTORY) {
            self.0.pop_front();
        }
    }

    /// How long ago the primary was where the replica is now: the age of the newest sample the
    /// replica has replayed; older than every sample when it has replayed none of them.
    fn lag(&self, now: Instant, replayed: i64) -> Duration {
        match self.0.iter().rev().find(|(_, lsn)| *lsn <= replayed) {
            Some((at, _)) if Some(at) == self.0.back().map(|(t, _)| t) => Duration::ZERO,
            Some((at, _)) => now.duration_since(*at),
            None => self.0.front().map(|(at, _)| now.duration_since(*at)).unwrap_or(Duration::ZERO),
        }
    }
}

/// Sends a query (`GET`/`HEAD`) to the replica while it is usable, and asks the primary again
/// when the replica failed it (or did not reach its `X-Min-Position` within the allowed lag). Other requests, and every request without a replica, read the
/// primary.
pub async fn route_reads(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(replica) = state.app.replica.as_ref() else { return next.run(req).await };
    let query = matches!(*req.method(), Method::GET | Method::HEAD);
    if !query || !replica.usable() {
        if query {
            metrics::counter!("parley_query_reads_total", "target" => "primary").increment(1);
        }
        req.extensions_mut().insert(ReadFrom::Primary);
        return next.run(req).await;
    }
    // A query's body is empty (anything larger than a request may carry is refused anyway).
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, crate::http::MAX_BODY).await.unwrap_or_default();
    let mut again = Request::from_parts(parts.clone(), Body::from(body.clone()));
    let mut req = Request::from_parts(parts, Body::from(body));
    req.extensions_mut().insert(ReadFrom::Replica);
    let response = next.clone().run(req).await;
    if response.extensions().get::<TryAnotherCopy>().is_none() {
        metrics::counter!("parley_query_reads_total", "target" => "replica").increment(1);
        return response;
    }
    tracing::warn!("the replica failed a query; asking the primary");
    metrics::counter!("parley_replica_fallbacks_total").increment(1);
    metrics::counter!("parley_query_reads_total", "target" => "primary").increment(1);
    again.extensions_mut().insert(ReadFrom::Primary);
    next.run(again).await
}

/// Whether `e` is a standby refusing a query the primary can answer: a recovery conflict (replay
/// needed rows or a lock the query held; the same query succeeds on the primary, or later), a
/// write reaching a read-only standby, or an unlogged table (presence, stream viewers), which a
/// standby has no contents for and refuses to read.
pub fn is_refused_by_standby(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| {
        let (code, message) = (d.code(), d.message());
        match code.as_deref() {
            Some("40001") => message.contains("conflict with recovery"),
            Some("25006") => true,
            Some("0A000") => message.contains("during recovery"),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(now: Instant, samples: &[(u64, i64)]) -> WalHistory {
        let mut h = WalHistory::default();
        for (ms_ago, lsn) in samples {
            h.sample(now - Duration::from_millis(*ms_ago), *lsn);
        }
        h
    }

    #[test]
    fn a_replica_that_replayed_the_newest_sample_has_no_lag() {
        let now = Instant::now();
        let h = history(now, &[(1000, 10), (750, 20), (500, 20), (250, 30)]);
        assert_eq!(h.lag(now, 30), Duration::ZERO);
        assert_eq!(h.lag(now, 35), Duration::ZERO);
    }

    #[test]
    fn a_replica_is_as_old_as_the_newest_sample_it_replayed() {
        let now = Instant::now();
        let h = history(now, &[(1000, 10), (750, 20), (500, 20), (250, 30)]);
        assert_eq!(h.lag(now, 20), Duration::from_millis(500));
        assert_eq!(h.lag(now, 25), Duration::from_millis(500));
        assert_eq!(h.lag(now, 10), Duration::from_millis(1000));
    }

    #[test]
    fn a_replica_behind_every_sample_is_older_than_all_of_them() {
        let now = Instant::now();
        let h = history(now, &[(1000, 10), (250, 30)]);
        assert_eq!(h.lag(now, 5), Duration::from_millis(1000));
    }

    #[test]
    fn an_idle_primary_keeps_a_replica_that_caught_up_fresh() {
        // The primary wrote nothing for a minute: every sample is the same position.
        let now = Instant::now();
        let h = history(now, &[(60_000, 50), (30_000, 50), (250, 50)]);
        assert_eq!(h.lag(now, 50), Duration::ZERO);
    }

    #[test]
    fn samples_older_than_the_history_are_dropped() {
        let now = Instant::now();
        let h = history(now, &[(120_000, 1), (90_000, 2), (1000, 3), (0, 4)]);
        assert_eq!(h.0.len(), 2);
    }
}
