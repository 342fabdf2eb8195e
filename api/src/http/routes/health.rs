//! `/health`, `/ready`, `/metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::Routes;
use crate::http::error::{ApiError, Code};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default().get("/health", health).get("/ready", ready).get("/metrics", metrics)
}

/// 200 while the process runs.
async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// How long `/ready` waits for the database: a balancer's probe must get its answer in time
/// even while the database is away.
const READY_TIMEOUT: Duration = Duration::from_millis(800);

/// 200 when the database answers and every migration this binary knows is applied.
async fn ready(State(state): State<AppState>) -> Response {
    let latest = parley_migrations::MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied = tokio::time::timeout(
        READY_TIMEOUT,
        sqlx::query_as::<_, (Option<i64>,)>("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(state.app.store.pool()),
    )
    .await;
    match applied {
        Ok(Ok((Some(v),))) if v >= latest => {
            (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
        }
        Ok(Ok(_)) => ApiError::new(Code::ServiceUnavailable, "migrations are not current")
            .retry_after(5)
            .into_response(),
        Ok(Err(_)) | Err(_) => ApiError::new(Code::ServiceUnavailable, "the database does not answer")
            .retry_after(1)
            .into_response(),
    }
}

/// Prometheus text format.
async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => ([("content-type", "text/plain; version=0.0.4")], handle.render()).into_response(),
        None => ApiError::new(Code::ServiceUnavailable, "metrics are not enabled").into_response(),
    }
}
