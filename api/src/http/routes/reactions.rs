//! `/api/v1/reactions`: one emoji of one member on one message.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::respond::{created, no_content, ok};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default().post("/reactions", add).delete("/reactions/{id}", remove)
}

#[derive(Deserialize)]
struct AddBody {
    message_id: Uuid,
    emoji: String,
}

/// 201 with the new reaction, or 200 with the one the caller already has with this emoji.
#[tracing::instrument(skip_all)]
async fn add(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson { value: body, .. }: ApiJson<AddBody>,
) -> Result<Response, ApiError> {
    let reacted = state.app.commands.add_reaction(&principal.ctx, body.message_id, &body.emoji).await?;
    let r = &reacted.reaction;
    let data = json!({
        "id": r.reaction_id, "message_id": r.message_id, "conversation_id": reacted.done.aggregate.id,
        "user_id": r.user_id, "emoji": r.emoji,
    });
    Ok(if reacted.created { created(data, reacted.done.cursor) } else { ok(data, reacted.done.cursor) })
}

/// Takes a reaction back; its author only.
#[tracing::instrument(skip_all)]
async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let done = state.app.commands.remove_reaction(&principal.ctx, id).await?;
    done.cursor.map(no_content).ok_or_else(ApiError::not_found)
}
