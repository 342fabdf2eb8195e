//! `/api/v1/api_keys`: credentials for programs. The secret is in the creation's answer only
//! (so an Idempotency-Key, which would store it, is refused); lists show its visible prefix.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use parley_aggregates::permissions::Permission;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::consistency;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiPath, MinPosition, NoIdempotencyKey, Pagination};
use crate::http::respond::{created, envelope, no_content, respond, with_etag};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default().get("/api_keys", list).post("/api_keys", create).delete("/api_keys/{id}", revoke)
}

#[derive(Deserialize)]
struct CreateBody {
    name: String,
    permissions: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
}

/// 201 with the secret, shown only here.
#[tracing::instrument(skip_all)]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    _: NoIdempotencyKey,
    ApiJson { value: body, .. }: ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let issued = state
        .app
        .commands
        .create_api_key(&principal.ctx, &body.name, &body.permissions, body.expires_at)
        .await?;
    state.api_keys.learn(&issued.key);
    let key = &issued.key.aggregate;
    let permissions: Vec<&str> = key.permissions.iter().map(|p| p.name()).collect();
    let created_at = issued.key.appended.first().map(|a| a.recorded_at);
    let shown = json!({
        "id": key.id, "name": key.name, "prefix": key.prefix, "permissions": permissions,
        "expires_at": key.expires_at, "created_by": principal.ctx.actor.id, "created_at": created_at,
        "status": "active", "secret": issued.secret, "version": issued.key.version,
    });
    Ok(with_etag(created(shown, issued.key.cursor), issued.key.version))
}

type KeyRow = (
    Uuid,
    String,
    String,
    Vec<String>,
    Uuid,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    i64,
);

/// The account's keys, newest first, revoked and expired ones included (with their status).
#[tracing::instrument(skip_all)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    MinPosition(min): MinPosition,
    page: Pagination,
) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::ApiKeysManage)?;
    consistency::projections(&state, &["api_keys"], min).await?;
    let pool = state.app.store.pool();
    let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM api_keys WHERE account_id = $1")
        .bind(principal.account_id())
        .fetch_one(pool)
        .await?;
    let rows: Vec<KeyRow> = sqlx::query_as(
        "SELECT id, name, prefix, permissions, created_by, created_at, expires_at, revoked_at, last_used_at, \
                version \
         FROM api_keys WHERE account_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
    )
    .bind(principal.account_id())
    .bind(page.per_page)
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    let now = Utc::now();
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(id, name, prefix, permissions, created_by, created_at, expires_at, revoked_at, last_used_at, version)| {
            let status = match (revoked_at, expires_at) {
                (Some(_), _) => "revoked",
                (None, Some(at)) if at <= now => "expired",
                _ => "active",
            };
            json!({
                "id": id, "name": name, "prefix": prefix, "permissions": permissions, "created_by": created_by,
                "created_at": created_at, "expires_at": expires_at, "revoked_at": revoked_at,
                "last_used_at": last_used_at, "status": status, "version": version,
            })
        })
        .collect();
    Ok(respond(StatusCode::OK, envelope(json!(items), page.meta(total), None), None))
}

/// Revokes a key: it authenticates nothing from here on, on this node before the answer and on
/// every other node as soon as the log brings them the event. Revoking it again changes nothing.
#[tracing::instrument(skip_all)]
async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let done = state.app.commands.revoke_api_key(&principal.ctx, id).await?;
    state.api_keys.learn(&done);
    done.cursor.map(no_content).ok_or_else(ApiError::not_found)
}
