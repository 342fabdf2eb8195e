//! `/api/v1/reactions`: one emoji of one member on one message.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use parley_commands::services::Reacted;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::door::{answer, Command};
use crate::http::error::{ApiError, Code};
use crate::http::extract::ApiPath;
use crate::http::openapi::shapes::Reaction;
use crate::http::openapi::Doc;
use crate::http::respond::no_content;
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default()
        .post("/reactions", add)
        .doc(
            Doc::new("React to a message (the same user and emoji again: 200 with the existing one)")
                .body::<AddBody>()
                .answers::<Reaction>(201)
                .answers::<Reaction>(200)
                .errors(&[Code::NotFound]),
        )
        .delete("/reactions/{id}", remove)
        .doc(Doc::new("Take back one's reaction").no_content().errors(&[Code::Forbidden]))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = NewReaction)]
struct AddBody {
    message_id: Uuid,
    /// One pictographic grapheme (flags, keycaps and ZWJ sequences count as one).
    #[schema(example = "👍")]
    emoji: String,
}

/// 201 with the new reaction, or 200 with the one the caller already has with this emoji.
#[tracing::instrument(skip_all)]
async fn add(
    State(state): State<AppState>,
    Command { principal, body, door, .. }: Command<AddBody>,
) -> Result<Response, ApiError> {
    let render = |reacted: &Reacted| {
        let r = &reacted.reaction;
        let data = json!({
            "id": r.reaction_id, "message_id": r.message_id, "conversation_id": reacted.done.aggregate.id,
            "user_id": r.user_id, "emoji": r.emoji,
        });
        let status = if reacted.created { StatusCode::CREATED } else { StatusCode::OK };
        answer(status, data, reacted.done.cursor)
    };
    let idempotency = door.idempotency(&render);
    let outcome = state
        .app
        .commands
        .add_reaction(&principal.ctx, body.message_id, &body.emoji, idempotency.as_ref())
        .await?;
    Ok(door.answer(outcome, &render))
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
