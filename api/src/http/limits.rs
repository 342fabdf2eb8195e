//! Login protection (API.md, "Auth"): requests to `/auth/*` per client IP, failed logins per
//! email. Fixed windows kept in this node's memory: with N nodes behind a balancer a client gets
//! up to N times the limit, which still stops brute force; a shared store would make it exact.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, Code};
use super::state::AppState;

/// How many hits a key may make per window.
#[derive(Clone)]
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    hits: Arc<Mutex<HashMap<String, (Instant, u32)>>>,
}

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self { limit, window, hits: Arc::default() }
    }

    /// Counts a hit; `Err(seconds)` to wait when the key is over its limit.
    pub fn hit(&self, key: &str) -> Result<(), u64> {
        self.check(key, true)
    }

    /// Whether the key is over its limit, without counting.
    pub fn peek(&self, key: &str) -> Result<(), u64> {
        self.check(key, false)
    }

    pub fn reset(&self, key: &str) {
        if let Ok(mut hits) = self.hits.lock() {
            hits.remove(key);
        }
    }

    fn check(&self, key: &str, count: bool) -> Result<(), u64> {
        let Ok(mut hits) = self.hits.lock() else { return Ok(()) };
        let now = Instant::now();
        if hits.len() > 100_000 {
            let window = self.window;
            hits.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = hits.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.limit {
            let wait = self.window.saturating_sub(now.duration_since(entry.0));
            return Err(wait.as_secs().max(1));
        }
        if count {
            entry.1 += 1;
        }
        Ok(())
    }
}

/// The limits a server enforces.
#[derive(Clone)]
pub struct Limits {
    /// Requests to `/auth/*` per client IP.
    pub auth_per_ip: RateLimiter,
    /// Failed logins per email.
    pub failed_logins: RateLimiter,
}

impl Limits {
    pub fn new(auth_per_minute: u32, failed_logins_per_15_minutes: u32) -> Self {
        Self {
            auth_per_ip: RateLimiter::new(auth_per_minute, Duration::from_secs(60)),
            failed_logins: RateLimiter::new(failed_logins_per_15_minutes, Duration::from_secs(15 * 60)),
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
    match state.limits.auth_per_ip.hit(&ip) {
        Ok(()) => next.run(req).await,
        Err(wait) => too_many(wait).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_stopped_past_its_limit_until_the_window_passes() {
        let limiter = RateLimiter::new(2, Duration::from_millis(50));
        assert!(limiter.hit("a").is_ok() && limiter.hit("a").is_ok());
        assert!(limiter.hit("a").is_err() && limiter.peek("a").is_err());
        assert!(limiter.hit("b").is_ok(), "keys are counted apart");
        std::thread::sleep(Duration::from_millis(60));
        assert!(limiter.hit("a").is_ok(), "a new window");
        limiter.reset("b");
        assert!(limiter.peek("b").is_ok());
    }
}
