//! `/api/v1/invitations`.

use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use serde_json::json;

use crate::http::auth::Principal;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, NoIdempotencyKey};
use crate::http::respond::created;
use crate::http::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/invitations", post(create))
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
