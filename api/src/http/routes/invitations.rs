//! `/api/v1/invitations`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use parley_aggregates::permissions::Permission;
use parley_projections::read_models::invitations::query as invitations;
use serde::Deserialize;
use serde_json::json;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiPath, Pagination, Reading};
use crate::http::respond::{created, envelope, no_content, respond};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default()
        .post_secret("/invitations", create)
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
async fn list(principal: Principal, reads: Reading, page: Pagination) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::UsersInvite)?;
    let (items, total) =
        invitations::list(&reads.get(), principal.account_id(), page.per_page, page.offset()).await?;
    Ok(respond(StatusCode::OK, envelope(json!(items), page.meta(total), None), None))
}

/// Revokes a pending invitation: its token no longer registers anyone.
#[tracing::instrument(skip_all)]
async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> Result<Response, ApiError> {
    let cursor = state.app.commands.revoke_invitation(&principal.ctx, id).await?;
    Ok(no_content(cursor))
}
