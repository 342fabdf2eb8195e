//! `/api/v1/notifications`: the caller's mentions and conversations they were added to.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::consistency;
use crate::http::error::ApiError;
use crate::http::extract::{ApiPath, ApiQuery, MinPosition, Pagination};
use crate::http::respond::{envelope, no_content, respond};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default()
        .get("/notifications", list)
        .post("/notifications/{id}/read", read)
        .post("/notifications/read_all", read_all)
}

#[derive(Deserialize)]
struct ListParams {
    unread: Option<bool>,
}

type Row = (Uuid, String, Uuid, Option<Uuid>, Uuid, DateTime<Utc>, String, Option<DateTime<Utc>>);

/// Newest first; `?unread=true` for those not read yet. `meta.unread_count` counts them all.
#[tracing::instrument(skip_all)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    MinPosition(min): MinPosition,
    page: Pagination,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let user_id = principal.user_id()?;
    consistency::projections(&state, &["notifications"], min).await?;
    let pool = state.app.store.pool();
    let unread_only = params.unread.unwrap_or(false);
    let (total, unread): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE NOT $2 OR read_at IS NULL), count(*) FILTER (WHERE read_at IS NULL) \
         FROM notifications WHERE user_id = $1",
    )
    .bind(user_id)
    .bind(unread_only)
    .fetch_one(pool)
    .await?;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, kind, conversation_id, message_id, actor_id, created_at, position, read_at FROM notifications \
         WHERE user_id = $1 AND (NOT $2 OR read_at IS NULL) ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4",
    )
    .bind(user_id)
    .bind(unread_only)
    .bind(page.per_page)
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(id, kind, conversation_id, message_id, actor_id, created_at, position, read_at)| {
            json!({"id": id, "kind": kind, "conversation_id": conversation_id, "message_id": message_id,
                   "actor_id": actor_id, "created_at": created_at, "position": position, "read_at": read_at})
        })
        .collect();
    let mut meta = page.meta(total);
    meta["unread_count"] = json!(unread);
    Ok(respond(StatusCode::OK, envelope(json!(items), meta, None), None))
}

#[tracing::instrument(skip_all)]
async fn read(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let cursor = match state.app.commands.mark_notification_read(&principal.ctx, id).await? {
        Some(cursor) => cursor,
        None => state.app.store.head().await.map_err(|e| ApiError::internal(&e))?,
    };
    Ok(no_content(cursor))
}

#[tracing::instrument(skip_all)]
async fn read_all(State(state): State<AppState>, principal: Principal) -> Result<Response, ApiError> {
    Ok(no_content(state.app.commands.mark_all_notifications_read(&principal.ctx).await?))
}
