//! Login protection (API.md, "Auth"): requests to `/auth/*` per client IP, failed logins per
//! email. Fixed windows counted in PostgreSQL, so every node sees the same counts: with N nodes
//! behind a balancer a client still gets the limit once, not N times. One statement per count,
//! on endpoints that already cost a password hash or a transaction. Old windows are deleted by
//! the platform's prune job (`parley_commands::jobs`).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sqlx::PgPool;

use super::error::{ApiError, Code};
use super::state::AppState;

/// How many hits a key may make per window, counted in the database.
#[derive(Clone)]
pub struct RateLimiter {
    pool: PgPool,
    /// Keys of this limiter start with it (`auth_ip:`, `login:`).
    namespace: &'static str,
    limit: u32,
    window: Duration,
}

impl RateLimiter {
    pub fn new(pool: PgPool, namespace: &'static str, limit: u32, window: Duration) -> Self {
        Self { pool, namespace, limit, window }
    }

    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.namespace)
    }

    /// Counts a hit; 429 with the seconds to wait when the key is over its limit. Counting and
    /// deciding are one statement, so concurrent hits on any nodes cannot pass the limit.
    pub async fn hit(&self, key: &str) -> Result<(), ApiError> {
        let counted = sqlx::query_as::<_, (i32, i64)>(
            "INSERT INTO rate_limits AS r (key, window_start, hits) VALUES ($1, now(), 1) \
             ON CONFLICT (key) DO UPDATE SET \
               window_start = CASE WHEN r.window_start <= now() - make_interval(secs => $2) \
                              THEN now() ELSE r.window_start END, \
               hits = CASE WHEN r.window_start <= now() - make_interval(secs => $2) THEN 1 ELSE r.hits + 1 END \
             RETURNING hits, ceil(extract(epoch FROM window_start + make_interval(secs => $2) - now()))::bigint",
        )
        .bind(self.key(key))
        .bind(self.window.as_secs_f64())
        .fetch_one(&self.pool)
        .await;
        match counted {
            Ok((hits, wait)) if hits as u32 > self.limit => Err(too_many(wait.max(1) as u64)),
            Ok(_) => Ok(()),
            // Without the database there is nothing to log in to either: say so now rather than
            // wait for a connection a second time.
            Err(e) if parley_eventstore::is_unavailable(&e) => Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "rate limit not counted");
                Ok(())
            }
        }
    }

    /// Gives back one hit (a login that succeeded was no failure).
    pub async fn forgive(&self, key: &str) {
        let forgiven = sqlx::query("UPDATE rate_limits SET hits = greatest(hits - 1, 0) WHERE key = $1")
            .bind(self.key(key))
            .execute(&self.pool)
            .await;
        if let Err(e) = forgiven {
            tracing::warn!(error = %e, "rate limit hit not given back");
        }
    }
}

/// The limits a server enforces.
#[derive(Clone)]
pub struct Limits {
    /// Requests to `/auth/*` per client IP.
    pub auth_per_ip: RateLimiter,
    /// Failed logins per email: each attempt takes a slot before the password is checked (so
    /// concurrent guesses cannot pass the limit), and a successful one gives it back.
    pub failed_logins: RateLimiter,
}

impl Limits {
    pub fn new(pool: PgPool, auth_per_minute: u32, failed_logins_per_15_minutes: u32) -> Self {
        Self {
            auth_per_ip: RateLimiter::new(pool.clone(), "auth_ip", auth_per_minute, Duration::from_secs(60)),
            failed_logins: RateLimiter::new(
                pool,
                "login",
                failed_logins_per_15_minutes,
                Duration::from_secs(15 * 60),
            ),
        }
    }
}

pub fn too_many(retry_after: u64) -> ApiError {
    ApiError::new(Code::RateLimited, "too many requests; try again later").retry_after(retry_after)
}

/// Middleware for `/auth/*`: counts every request by client IP.
pub async fn per_ip(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ip =
        req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_default();
    match state.limits.auth_per_ip.hit(&ip).await {
        Ok(()) => next.run(req).await,
        Err(refused) => refused.into_response(),
    }
}
