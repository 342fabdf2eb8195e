//! The per-credential request limit on `/api/v1` (API.md, "Rate limits"): each user (access
//! token) or API key may make `PARLEY_API_RATE_PER_MINUTE` requests per fixed minute, across
//! every node.
//!
//! Counting each request in PostgreSQL would cost a write per request, so each node counts in
//! memory and shares its counts at most once a second ([`ApiLimiter::sync`], run by a task per
//! node): one statement adds every key's local delta since the last sync to its row of
//! `api_rate_counts` and reads the cluster-wide totals back. A request is refused when the total
//! as of the last sync plus what this node counted since reaches the limit, so N nodes together
//! allow at most the limit plus what they count within one sync interval.
//!
//! Windows are fixed minutes of the wall clock (every node cuts them at the same instants). Every
//! decision takes its `now` explicitly (`*_at`), and the clock the server's requests use can be
//! pinned ([`ApiLimiter::pin_clock`]), so the window logic is tested without waiting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::auth::{origin, Principal};
use super::limits::too_many;
use super::state::AppState;

/// The length of a window, in milliseconds.
const WINDOW_MS: i64 = 60_000;
/// The limiter's clock when it is the wall clock.
const WALL_CLOCK: i64 = i64::MIN;
/// How often a node shares its counts.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// What a node knows of one key in the current window.
#[derive(Debug, Default, Clone, Copy)]
struct Count {
    /// Start of the window (Unix milliseconds).
    window: i64,
    /// The cluster-wide total as of the last sync (this node's synced hits included).
    synced: u64,
    /// Hits being added to the database by a sync under way.
    in_flight: u64,
    /// Hits counted here since the last sync.
    unsynced: u64,
    /// Seen since the last sync: its total is read back even when nothing was counted.
    touched: bool,
}

impl Count {
    fn hits(&self) -> u64 {
        self.synced + self.in_flight + self.unsynced
    }
}

/// The start of the window `now_ms` falls in.
fn window_of(now_ms: i64) -> i64 {
    now_ms - now_ms.rem_euclid(WINDOW_MS)
}

/// Whole seconds from `now_ms` to the end of its window, at least 1.
fn seconds_left(now_ms: i64) -> u64 {
    let left = window_of(now_ms) + WINDOW_MS - now_ms;
    ((left + 999) / 1000).max(1) as u64
}

/// A node's counter of requests per credential. Cheap to clone (shared state).
#[derive(Clone)]
pub struct ApiLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    limit: u64,
    counts: Mutex<HashMap<String, Count>>,
    /// One sync at a time (the task's and an explicit one would otherwise split the deltas).
    syncing: tokio::sync::Mutex<()>,
    /// A pinned time (Unix milliseconds), or [`WALL_CLOCK`].
    clock: AtomicI64,
}

impl ApiLimiter {
    pub fn new(pool: PgPool, limit_per_minute: u32) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                limit: u64::from(limit_per_minute),
                counts: Mutex::new(HashMap::new()),
                syncing: tokio::sync::Mutex::new(()),
                clock: AtomicI64::new(WALL_CLOCK),
            }),
        }
    }

    pub fn limit(&self) -> u64 {
        self.inner.limit
    }

    /// Stops the limiter's clock at `at` (tests: a window's end without waiting for it), or
    /// with `None` lets it follow the wall clock again.
    pub fn pin_clock(&self, at: Option<DateTime<Utc>>) {
        self.inner.clock.store(at.map_or(WALL_CLOCK, |t| t.timestamp_millis()), Ordering::SeqCst);
    }

    /// The limiter's time: the wall clock unless pinned.
    pub fn now(&self) -> DateTime<Utc> {
        match self.inner.clock.load(Ordering::SeqCst) {
            WALL_CLOCK => Utc::now(),
            pinned => DateTime::from_timestamp_millis(pinned).unwrap_or_else(Utc::now),
        }
    }

    /// Counts a request of `key` now; `Err(seconds)` to wait when it is over the limit.
    pub fn admit(&self, key: &str) -> Result<(), u64> {
        self.admit_at(key, self.now())
    }

    /// Counts a request of `key` at `now`. A refused request is not counted (it costs nothing).
    pub fn admit_at(&self, key: &str, now: DateTime<Utc>) -> Result<(), u64> {
        let now_ms = now.timestamp_millis();
        let window = window_of(now_ms);
        let mut counts = self.inner.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(key.to_owned()).or_default();
        if count.window != window {
            *count = Count { window, ..Count::default() };
        }
        count.touched = true;
        if count.hits() >= self.inner.limit {
            metrics::counter!("parley_api_rate_limited_total").increment(1);
            return Err(seconds_left(now_ms));
        }
        count.unsynced += 1;
        metrics::counter!("parley_api_rate_counted_total").increment(1);
        Ok(())
    }

    /// Shares this node's counts now (see [`ApiLimiter::sync_at`]).
    pub async fn sync(&self) -> Result<(), sqlx::Error> {
        self.sync_at(self.now()).await
    }

    /// Adds every key's hits counted here since the last sync to the database with one
    /// statement, and reads back the cluster-wide totals of the keys seen since; forgets the
    /// windows before `now`'s. On failure the hits stay to be added by the next sync.
    pub async fn sync_at(&self, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
        let _one = self.inner.syncing.lock().await;
        let window = window_of(now.timestamp_millis());
        let (keys, deltas) = {
            let mut counts = self.inner.counts.lock().unwrap_or_else(|p| p.into_inner());
            counts.retain(|_, c| c.window >= window);
            metrics::gauge!("parley_api_rate_keys").set(counts.len() as f64);
            let mut keys = Vec::new();
            let mut deltas = Vec::new();
            for (key, count) in counts.iter_mut().filter(|(_, c)| c.window == window && c.touched) {
                count.touched = false;
                count.in_flight = count.unsynced;
                count.unsynced = 0;
                keys.push(key.clone());
                deltas.push(count.in_flight as i64);
            }
            (keys, deltas)
        };
        if keys.is_empty() {
            return Ok(());
        }
        let window_start = DateTime::<Utc>::from_timestamp_millis(window).unwrap_or(now);
        // Keys with nothing new are read, not written.
        let totals = sqlx::query_as::<_, (String, i64)>(
            "WITH d AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS d(key, hits)), \
             added AS ( \
               INSERT INTO api_rate_counts AS c (key, window_start, hits) \
               SELECT key, $3, hits FROM d WHERE hits > 0 \
               ON CONFLICT (key, window_start) DO UPDATE SET hits = c.hits + EXCLUDED.hits \
               RETURNING key, hits) \
             SELECT d.key, coalesce(added.hits, c.hits, 0) FROM d \
             LEFT JOIN added ON added.key = d.key \
             LEFT JOIN api_rate_counts c ON c.key = d.key AND c.window_start = $3",
        )
        .bind(&keys)
        .bind(&deltas)
        .bind(window_start)
        .fetch_all(&self.inner.pool)
        .await;
        let mut counts = self.inner.counts.lock().unwrap_or_else(|p| p.into_inner());
        match totals {
            Ok(totals) => {
                let totals: HashMap<String, i64> = totals.into_iter().collect();
                for key in &keys {
                    let Some(count) = counts.get_mut(key).filter(|c| c.window == window) else { continue };
                    // Read back after this node's hits were added: they are in the total.
                    count.synced =
                        totals.get(key).map_or(count.synced + count.in_flight, |t| (*t).max(0) as u64);
                    count.in_flight = 0;
                }
                metrics::counter!("parley_api_rate_syncs_total", "outcome" => "ok").increment(1);
                Ok(())
            }
            Err(e) => {
                for key in &keys {
                    let Some(count) = counts.get_mut(key).filter(|c| c.window == window) else { continue };
                    count.unsynced += count.in_flight;
                    count.in_flight = 0;
                    count.touched = true;
                }
                metrics::counter!("parley_api_rate_syncs_total", "outcome" => "failed").increment(1);
                Err(e)
            }
        }
    }

    /// Syncs every [`SYNC_EVERY`] until `stop` says so, then once more.
    pub fn spawn_sync(&self, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let limiter = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SYNC_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                if let Err(e) = limiter.sync().await {
                    if parley_eventstore::is_unavailable(&e) {
                        tracing::debug!(error = %e, "API request counts not shared: the database is away");
                    } else {
                        tracing::warn!(error = %e, "API request counts not shared");
                    }
                }
            }
            let _ = limiter.sync().await;
        })
    }
}

#[derive(Deserialize)]
struct CableToken {
    token: Option<String>,
}

/// The credential a request presents: `Authorization: Bearer ...`, or the cable's `token`
/// query parameter (its only way to authenticate a WebSocket handshake).
fn presented(req: &Request) -> Option<String> {
    let path = req.uri().path();
    if path == "/cable" || path == "/api/v1/cable" {
        return Query::<CableToken>::try_from_uri(req.uri()).ok()?.0.token.filter(|t| !t.is_empty());
    }
    let header = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer "))?.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

/// Middleware for all of `/api/v1`: counts every request authenticated by an access token or an
/// API key once, under `user:<id>` or `api_key:<id>`, and refuses it with 429 past the limit.
///
/// A layer rather than counting in [`Principal`]'s extractor: the extractor may run more than
/// once for a request (the idempotency door extracts it, and so may a handler), and not at all
/// for some (a route that does not exist, a request refused by an extractor that runs first,
/// the cable, which authenticates by its query string), whereas a layer sees each request
/// exactly once, before any handler work. Resolving the principal here is cheap (verified
/// tokens and known keys are kept in memory), and the resolved principal is handed on in the
/// request's extensions so the extractor does not resolve it again. A credential that does not
/// authenticate is not counted: the handler answers it 401 as before.
pub async fn per_credential(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(credential) = presented(&req) else {
        return next.run(req).await;
    };
    let (mut parts, body) = req.into_parts();
    let (request_id, client_ip) = origin(&parts);
    if let Ok(principal) = Principal::authenticate(&state, &credential, request_id, client_ip).await {
        if let Err(wait) = state.api_limiter.admit(&principal.credential_scope()) {
            return too_many(wait).into_response();
        }
        parts.extensions.insert(principal);
    }
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use sqlx::postgres::PgPoolOptions;

    use super::*;

    fn limiter(limit: u32) -> ApiLimiter {
        // Never connects: these tests do not sync.
        let pool = PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(500))
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        ApiLimiter::new(pool, limit)
    }

    fn at(secs: i64, ms: u32) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, ms * 1_000_000).unwrap()
    }

    #[tokio::test]
    async fn the_request_past_the_limit_waits_for_the_end_of_the_window() {
        let l = limiter(5);
        let start = 1_800_000_000; // a whole minute (30 000 000 of them)
        for i in 0..5 {
            assert_eq!(l.admit_at("user:a", at(start + 10 + i, 0)), Ok(()));
        }
        // 20.5 s into the window: 39.5 s left, said as 40.
        assert_eq!(l.admit_at("user:a", at(start + 20, 500)), Err(40));
        assert_eq!(l.admit_at("user:a", at(start + 59, 999)), Err(1));
        // Others are counted apart.
        assert_eq!(l.admit_at("user:b", at(start + 30, 0)), Ok(()));
        assert_eq!(l.admit_at("api_key:a", at(start + 30, 0)), Ok(()));
        // The next window starts afresh.
        for i in 0..5 {
            assert_eq!(l.admit_at("user:a", at(start + 60 + i, 0)), Ok(()));
        }
        assert!(l.admit_at("user:a", at(start + 65, 0)).is_err());
    }

    #[test]
    fn windows_are_cut_on_whole_minutes() {
        assert_eq!(window_of(60_000), 60_000);
        assert_eq!(window_of(119_999), 60_000);
        assert_eq!(seconds_left(60_000), 60);
        assert_eq!(seconds_left(119_001), 1);
        assert_eq!(seconds_left(119_999), 1);
    }

    #[tokio::test]
    async fn a_failed_sync_keeps_the_hits_counted() {
        let l = limiter(3);
        let now = at(1_800_000_000, 0);
        l.admit_at("user:a", now).unwrap();
        l.admit_at("user:a", now).unwrap();
        assert!(l.sync_at(now).await.is_err(), "nothing listens there");
        l.admit_at("user:a", now).unwrap();
        assert!(l.admit_at("user:a", now).is_err(), "the two before the failed sync still count");
    }
}
