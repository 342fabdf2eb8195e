//! `/api/v1/invitations`.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, NoIdempotencyKey};
use crate::http::respond::created;
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default()
        .post("/invitations", create)
        .get("/invitations", list)
        .delete("/invitations/{id}", revoke)
}

#[derive(Deserialize)]
struct CreateBody {
    email: String,
    role: String,
}

/// 201 with the token: the only time it is shown (so an Idempotency-Key, which would store it,
/// is refused).
#[tracing::instrument(skip_all)]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    _: NoIdempotencyKey,
    ApiJson { value: body, .. }: ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let issued = state.app.commands.invite(&principal.ctx, &body.email, &body.role).await?;
    Ok(created(
        json!({
            "id": issued.invitation_id, "email": issued.email, "role": issued.role,
            "token": issued.token, "expires_at": issued.expires_at,
        }),
        Some(issued.cursor),
    ))
}

/// The account's invitations, newest first (never their tokens).
#[tracing::instrument(skip_all)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    crate::http::extract::MinPosition(min): crate::http::extract::MinPosition,
    page: crate::http::extract::Pagination,
) -> Result<Response, ApiError> {
    principal.ctx.require(parley_aggregates::permissions::Permission::UsersInvite)?;
    crate::http::consistency::projections(&state, &["invitations"], min).await?;
    let pool = state.app.store.pool();
    let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM invitations WHERE account_id = $1")
        .bind(principal.account_id())
        .fetch_one(pool)
        .await?;
    type Row = (
        uuid::Uuid,
        String,
        String,
        uuid::Uuid,
        String,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, email, role, invited_by, status, expires_at, created_at FROM invitations \
         WHERE account_id = $1 ORDER BY created_at DESC, id LIMIT $2 OFFSET $3",
    )
    .bind(principal.account_id())
    .bind(page.per_page)
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    let now = chrono::Utc::now();
    let items: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|(id, email, role, invited_by, status, expires_at, created_at)| {
            let status = if status == "pending" && expires_at <= now { "expired".to_owned() } else { status };
            json!({"id": id, "email": email, "role": role, "invited_by": invited_by, "status": status,
                   "expires_at": expires_at, "created_at": created_at})
        })
        .collect();
    Ok(crate::http::respond::respond(
        axum::http::StatusCode::OK,
        crate::http::respond::envelope(json!(items), page.meta(total), None),
        None,
    ))
}

/// Revokes a pending invitation: its token no longer registers anyone.
#[tracing::instrument(skip_all)]
async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    crate::http::extract::ApiPath(id): crate::http::extract::ApiPath<uuid::Uuid>,
) -> Result<Response, ApiError> {
    let cursor = state.app.commands.revoke_invitation(&principal.ctx, id).await?;
    Ok(crate::http::respond::no_content(cursor))
}
