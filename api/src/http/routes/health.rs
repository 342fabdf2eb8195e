//! `/health`, `/ready`, `/metrics`.

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

/// 200 when the database answers and every migration this binary knows is applied.
async fn ready(State(state): State<AppState>) -> Response {
    let latest = parley_migrations::MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Result<(Option<i64>,), sqlx::Error> =
        sqlx::query_as("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(state.app.store.pool())
            .await;
    match applied {
        Ok((Some(v),)) if v >= latest => (StatusCode::OK, Json(json!({"status": "ready"}))).into_response(),
        Ok(_) => ApiError::new(Code::ServiceUnavailable, "migrations are not current")
            .retry_after(5)
            .into_response(),
        Err(_) => ApiError::new(Code::ServiceUnavailable, "the database does not answer")
            .retry_after(5)
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
