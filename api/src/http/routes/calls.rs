//! `/api/v1/conversations/{id}/calls`: start a call, answer it, hang up, the live call for late
//! joiners and the history. Calls of a conversation you are not a member of are 404.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use parley_aggregates::call::Call;
use parley_commands::Executed;
use parley_eventstore::LogCursor;
use parley_projections::read_models::calls::query::{self as calls, CallView};
use parley_projections::Reads;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::door::{answer, BodilessCommand, Command};
use crate::http::error::{ApiError, Code};
use crate::http::extract::{ApiPath, Pagination, Reading};
use crate::http::openapi::Doc;
use crate::http::respond::{envelope, respond, with_etag};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default()
        .post("/conversations/{id}/calls", start)
        .doc(
            Doc::new("Start a call: `calling`, then `ringing` once the callees were told")
                .describe("One live call per conversation: 409 with `details.call_id` of the live one.")
                .permission("calls.start")
                .body::<StartBody>()
                .answers::<CallView>(201)
                .errors(&[Code::Conflict]),
        )
        .get("/conversations/{id}/calls", history)
        .doc(Doc::new("The conversation's calls, newest first").paged::<CallView>().reads())
        .get("/conversations/{id}/calls/active", active)
        .doc(
            Doc::new("The live call (`calling`, `ringing` or `active`), for a late join")
                .answers::<CallView>(200)
                .etag()
                .reads(),
        )
        .put("/conversations/{id}/calls/{call_id}/accept", accept)
        .doc(Doc::new("Join the call as a callee").answers::<CallView>(200).etag().errors(&[Code::Conflict]))
        .put("/conversations/{id}/calls/{call_id}/decline", decline)
        .doc(Doc::new("Decline the call").answers::<CallView>(200).etag().errors(&[Code::Conflict]))
        .delete("/conversations/{id}/calls/{call_id}", hang_up)
        .doc(
            Doc::new("Hang up (the caller before an accept cancels it)")
                .answers::<CallView>(200)
                .etag()
                .errors(&[Code::Conflict]),
        )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = NewCall)]
struct StartBody {
    /// `audio` or `video`.
    #[schema(pattern = "^(audio|video)$", example = "video")]
    kind: String,
}

/// The call as the read model has it once it includes `position`.
async fn shown(
    state: &AppState,
    principal: &Principal,
    conversation_id: Uuid,
    call_id: Uuid,
    position: Option<LogCursor>,
) -> Result<CallView, ApiError> {
    let reads = Reads::new(state.app.store.pool(), position);
    calls::call(&reads, principal.account_id(), conversation_id, call_id)
        .await?
        .ok_or_else(ApiError::not_found)
}

/// The started call, from the command's own outcome: what the read model will show.
fn started(done: &Executed<Call>) -> Option<CallView> {
    let (event, appended) = done.events.first().zip(done.appended.first())?;
    CallView::started(event, appended.recorded_at, appended.version)
}

/// 201 with the call, `calling`; 409 with `details.call_id` when the conversation has a live call.
#[tracing::instrument(skip_all, fields(conversation_id = %conversation_id))]
async fn start(
    State(state): State<AppState>,
    ApiPath(conversation_id): ApiPath<Uuid>,
    Command { principal, body, door, .. }: Command<StartBody>,
) -> Result<Response, ApiError> {
    let render = |done: &Executed<Call>| answer(StatusCode::CREATED, json!(started(done)), done.cursor);
    let idempotency = door.idempotency(&render);
    let outcome =
        state.app.calls.start_with(&principal.ctx, conversation_id, &body.kind, idempotency.as_ref()).await?;
    Ok(door.answer(outcome, &render))
}

/// A member's view of the conversation's calls: 404 for anyone else.
async fn member(state: &AppState, principal: &Principal, conversation_id: Uuid) -> Result<(), ApiError> {
    let user = principal.ctx.user_id()?;
    let conversation = state
        .app
        .commands
        .dispatcher()
        .load::<parley_aggregates::conversation::Conversation>(&conversation_id.to_string())
        .await?;
    match conversation {
        Some(c) if c.account_id == principal.account_id() && c.aggregate.is_member(user) => Ok(()),
        _ => Err(ApiError::not_found()),
    }
}

#[tracing::instrument(skip_all)]
async fn history(
    State(state): State<AppState>,
    principal: Principal,
    reads: Reading,
    ApiPath(conversation_id): ApiPath<Uuid>,
    page: Pagination,
) -> Result<Response, ApiError> {
    member(&state, &principal, conversation_id).await?;
    let (items, total) =
        calls::history(&reads.get(), principal.account_id(), conversation_id, page.per_page, page.offset())
            .await?;
    Ok(respond(StatusCode::OK, envelope(json!(items), page.meta(total), None), None))
}

/// The live call, for late join; 404 if none.
#[tracing::instrument(skip_all)]
async fn active(
    State(state): State<AppState>,
    principal: Principal,
    reads: Reading,
    ApiPath(conversation_id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    member(&state, &principal, conversation_id).await?;
    let call = calls::active(&reads.get(), principal.account_id(), conversation_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let version = call.version;
    Ok(with_etag(respond(StatusCode::OK, envelope(json!(call), json!({}), None), None), version))
}

/// 200 with the call as the command left it.
async fn answered(
    state: &AppState,
    principal: &Principal,
    conversation_id: Uuid,
    call_id: Uuid,
    position: Option<LogCursor>,
) -> Result<Response, ApiError> {
    let view = shown(state, principal, conversation_id, call_id, position).await?;
    let version = view.version;
    Ok(with_etag(respond(StatusCode::OK, envelope(json!(view), json!({}), position), position), version))
}

#[tracing::instrument(skip_all)]
async fn accept(
    State(state): State<AppState>,
    ApiPath((conversation_id, call_id)): ApiPath<(Uuid, Uuid)>,
    BodilessCommand { principal, .. }: BodilessCommand,
) -> Result<Response, ApiError> {
    let done = state.app.calls.accept(&principal.ctx, conversation_id, call_id).await?;
    answered(&state, &principal, conversation_id, call_id, done.cursor).await
}

#[tracing::instrument(skip_all)]
async fn decline(
    State(state): State<AppState>,
    ApiPath((conversation_id, call_id)): ApiPath<(Uuid, Uuid)>,
    BodilessCommand { principal, .. }: BodilessCommand,
) -> Result<Response, ApiError> {
    let done = state.app.calls.decline(&principal.ctx, conversation_id, call_id).await?;
    answered(&state, &principal, conversation_id, call_id, done.cursor).await
}

#[tracing::instrument(skip_all)]
async fn hang_up(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((conversation_id, call_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Response, ApiError> {
    let done = state.app.calls.hang_up(&principal.ctx, conversation_id, call_id).await?;
    answered(&state, &principal, conversation_id, call_id, done.cursor).await
}
