//! `/api/v1/streams/{id}`: a stream (seen by whoever may see its experience), going live and
//! ending (`spaces.manage`), and joining its media room with a LiveKit token.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use parley_aggregates::creator::Stream;
use parley_aggregates::permissions::Permission;
use parley_commands::Executed;
use parley_projections::read_models::creator::query::{self as creator, StreamView};
use parley_projections::read_models::users::query as users;
use serde_json::json;
use uuid::Uuid;

use super::experiences::visible_experience;
use super::Routes;
use crate::http::auth::Principal;
use crate::http::door::{answer, BodilessCommand};
use crate::http::error::{ApiError, Code};
use crate::http::extract::{ApiPath, Reading};
use crate::http::openapi::Doc;
use crate::http::respond::{ok, with_etag};
use crate::http::state::AppState;

const MANAGE: &str = "spaces.manage";

pub fn router() -> Routes {
    Routes::default()
        .get("/streams/{id}", show)
        .doc(
            Doc::new("A stream: with a live grant to its experience or `spaces.manage`")
                .answers::<StreamView>(200)
                .etag()
                .reads(),
        )
        .post("/streams/{id}/start", start)
        .doc(
            Doc::new("Go live: only a scheduled stream (409 otherwise); opens the stream's chat")
                .permission(MANAGE)
                .answers::<StreamView>(200)
                .etag()
                .errors(&[Code::Conflict]),
        )
        .post("/streams/{id}/end", end)
        .doc(
            Doc::new("End a live stream (409 otherwise); an archive job follows")
                .permission(MANAGE)
                .answers::<StreamView>(200)
                .etag()
                .errors(&[Code::Conflict]),
        )
        .post_secret("/streams/{id}/join", join)
        .doc(
            Doc::new("A LiveKit access token for the live stream's room (hosts may publish)")
                .describe(
                    "Only while the stream is live (409 otherwise); 503 when LiveKit is not configured.",
                )
                .answers::<JoinToken>(200)
                .errors(&[Code::Conflict, Code::ServiceUnavailable]),
        )
}

/// The stream, when the caller may see its experience; 404 otherwise.
async fn visible_stream(
    state: &AppState,
    reads: &parley_projections::Reads<'_>,
    principal: &Principal,
    id: Uuid,
) -> Result<StreamView, ApiError> {
    let stream = creator::stream(reads, principal.account_id(), id).await?.ok_or_else(ApiError::not_found)?;
    visible_experience(state, reads, principal, stream.experience_id).await?;
    Ok(stream)
}

#[tracing::instrument(skip_all)]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    reads: Reading,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let mut stream = visible_stream(&state, &reads.get(), &principal, id).await?;
    with_viewer_counts(&state, std::slice::from_mut(&mut stream)).await;
    let version = stream.version;
    Ok(with_etag(ok(json!(stream), None), version))
}

fn render(done: &Executed<Stream>) -> parley_eventstore::idempotency::StoredResponse {
    answer(StatusCode::OK, json!(StreamView::of(&done.aggregate, done.version)), done.cursor)
}

/// Fills each live stream's `viewer_count` from the cluster's viewer counts (one statement).
pub(crate) async fn with_viewer_counts(state: &AppState, streams: &mut [StreamView]) {
    let live: Vec<Uuid> = streams.iter().filter(|s| s.state == "live").map(|s| s.id).collect();
    if live.is_empty() {
        return;
    }
    let counts = state.live.viewers.counts(&live).await;
    for stream in streams.iter_mut().filter(|s| s.state == "live") {
        stream.viewer_count = counts.get(&stream.id).copied().unwrap_or(0);
    }
}

#[tracing::instrument(skip_all)]
async fn start(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    BodilessCommand { principal, door }: BodilessCommand,
) -> Result<Response, ApiError> {
    let idempotency = door.idempotency(&render);
    let outcome = state.app.creator.start_stream(&principal.ctx, id, idempotency.as_ref()).await?;
    Ok(door.answer(outcome, &render))
}

#[tracing::instrument(skip_all)]
async fn end(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    BodilessCommand { principal, door }: BodilessCommand,
) -> Result<Response, ApiError> {
    let idempotency = door.idempotency(&render);
    let outcome = state.app.creator.end_stream(&principal.ctx, id, idempotency.as_ref()).await?;
    Ok(door.answer(outcome, &render))
}

/// A media-server token and where to use it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct JoinToken {
    /// A LiveKit access token (HS256): `iss` the API key, `sub` the user, six hours.
    token: String,
    room: String,
    /// The LiveKit server, when configured.
    url: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn join(
    State(state): State<AppState>,
    principal: Principal,
    reads: Reading,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let user_id = principal.user_id()?;
    let reads = reads.get();
    let stream = visible_stream(&state, &reads, &principal, id).await?;
    let Some(livekit) = state.integrations.livekit.as_ref() else {
        return Err(ApiError::new(
            Code::ServiceUnavailable,
            "streaming is not configured on this server (LiveKit)",
        )
        .retry_after(60));
    };
    if stream.state != "live" {
        return Err(ApiError::new(
            Code::Conflict,
            format!("the stream is {}: only a live stream can be joined", stream.state),
        ));
    }
    let host = principal.ctx.actor.can(Permission::SpacesManage);
    if let (false, Some(max)) = (host, stream.max_participants) {
        let others = state.live.viewers.others(id, user_id).await?;
        if others >= i64::from(max) {
            return Err(ApiError::new(Code::Conflict, format!("the stream is full: {max} viewers are in"))
                .with_details(json!({"max_participants": max})));
        }
    }
    let name = users::public_profile(&reads, principal.account_id(), user_id)
        .await?
        .map(|p| p.display_name.unwrap_or(p.name))
        .unwrap_or_default();
    let token = livekit
        .join_token(user_id, &name, &stream.room_name, host, state.app.creator.now())
        .map_err(|e| ApiError::internal(&e))?;
    Ok(ok(json!({"token": token, "room": stream.room_name, "url": livekit.url}), None))
}
