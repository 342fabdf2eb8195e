//! `/api/v1/experiences`: one experience (seen with a live grant or `spaces.manage`; 404
//! otherwise, as for another account's), its streams, and the account's most popular ones.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use parley_aggregates::creator::Stream;
use parley_commands::creator::ExperienceInput;
use parley_commands::Executed;
use parley_projections::read_models::creator::query::{self as creator, ExperienceView, StreamView};
use parley_projections::Reads;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::spaces::viewer;
use super::Routes;
use crate::http::auth::Principal;
use crate::http::door::{answer, Command};
use crate::http::error::ApiError;
use crate::http::extract::{nullable_field, ApiJson, ApiPath, ApiQuery, IfMatch, Pagination, Reading};
use crate::http::openapi::{Doc, Meta};
use crate::http::respond::{envelope, no_content, ok, respond, with_etag};
use crate::http::state::AppState;

const MANAGE: &str = "spaces.manage";

pub fn router() -> Routes {
    Routes::default()
        .get("/experiences/popular", popular)
        .doc(
            Doc::new("The account's published experiences with the most active grants first")
                .query::<PopularQuery>()
                .lists::<ExperienceView>(Meta::Plain)
                .reads(),
        )
        .get("/experiences/{id}", show)
        .doc(
            Doc::new("An experience: with a live grant or `spaces.manage`")
                .answers::<ExperienceView>(200)
                .etag()
                .reads(),
        )
        .patch("/experiences/{id}", update)
        .doc(
            Doc::new("Change an experience: what is given (`description: null` clears it)")
                .permission(MANAGE)
                .body::<ExperienceChanges>()
                .answers::<ExperienceView>(200)
                .if_match(),
        )
        .delete("/experiences/{id}", delete)
        .doc(Doc::new("Delete an experience").permission(MANAGE).no_content())
        .get("/experiences/{id}/streams", streams)
        .doc(Doc::new("An experience's streams, by start time").paged::<StreamView>().reads())
        .post("/experiences/{id}/streams", schedule)
        .doc(
            Doc::new("Schedule a stream of a live-stream experience; its media room is fixed now")
                .permission(MANAGE)
                .body::<NewStream>()
                .answers::<StreamView>(201),
        )
}

/// The experience, when the caller may see it; 404 otherwise.
pub(crate) async fn visible_experience(
    state: &AppState,
    reads: &Reads<'_>,
    principal: &Principal,
    id: Uuid,
) -> Result<ExperienceView, ApiError> {
    let experience =
        creator::experience(reads, principal.account_id(), id).await?.ok_or_else(ApiError::not_found)?;
    if let Some(user) = viewer(principal)? {
        if !creator::has_access(reads, user, id, state.app.creator.now()).await? {
            return Err(ApiError::not_found());
        }
    }
    Ok(experience)
}

#[derive(Deserialize, utoipa::IntoParams)]
struct PopularQuery {
    /// 1..50 (default 10).
    limit: Option<i64>,
}

#[tracing::instrument(skip_all)]
async fn popular(
    principal: Principal,
    reads: Reading,
    ApiQuery(q): ApiQuery<PopularQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(10).clamp(1, 50);
    let items = creator::popular(&reads.get(), principal.account_id(), limit).await?;
    Ok(respond(StatusCode::OK, envelope(json!(items), json!({}), None), None))
}

#[tracing::instrument(skip_all)]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    reads: Reading,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let experience = visible_experience(&state, &reads.get(), &principal, id).await?;
    let version = experience.version;
    Ok(with_etag(ok(json!(experience), None), version))
}

/// `PATCH /experiences/{id}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
struct ExperienceChanges {
    #[schema(min_length = 1, max_length = 100)]
    name: Option<String>,
    #[schema(nullable, max_length = 5000)]
    description: Option<String>,
    #[schema(pattern = "^(live_stream|course|community|consultation|digital_product)$")]
    experience_type: Option<String>,
    #[schema(minimum = 0, maximum = 999999)]
    price_cents: Option<i64>,
    #[schema(pattern = "^[A-Za-z]{3}$")]
    currency: Option<String>,
    published: Option<bool>,
}

#[tracing::instrument(skip_all)]
async fn update(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    IfMatch(expected): IfMatch,
    ApiJson { value: changes, raw }: ApiJson<ExperienceChanges>,
) -> Result<Response, ApiError> {
    let input = ExperienceInput {
        name: changes.name,
        description: nullable_field(&raw, "description")?,
        experience_type: changes.experience_type,
        price_cents: changes.price_cents,
        currency: changes.currency,
        published: changes.published,
    };
    let done = state.app.creator.update_experience(&principal.ctx, id, &input, expected).await?;
    let reads = Reads::new(state.app.store.pool(), done.cursor);
    let experience =
        creator::experience(&reads, principal.account_id(), id).await?.ok_or_else(ApiError::not_found)?;
    let version = experience.version;
    Ok(with_etag(ok(json!(experience), done.cursor), version))
}

#[tracing::instrument(skip_all)]
async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let done = state.app.creator.delete_experience(&principal.ctx, id).await?;
    done.cursor.map(no_content).ok_or_else(ApiError::not_found)
}

#[tracing::instrument(skip_all)]
async fn streams(
    State(state): State<AppState>,
    principal: Principal,
    reads: Reading,
    ApiPath(id): ApiPath<Uuid>,
    page: Pagination,
) -> Result<Response, ApiError> {
    let reads = reads.get();
    visible_experience(&state, &reads, &principal, id).await?;
    let (mut items, total) =
        creator::streams(&reads, principal.account_id(), id, page.per_page, page.offset()).await?;
    super::streams::with_viewer_counts(&state, &mut items).await;
    Ok(respond(StatusCode::OK, envelope(json!(items), page.meta(total), None), None))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct NewStream {
    #[schema(min_length = 1, max_length = 200, example = "Launch day")]
    title: String,
    starts_at: chrono::DateTime<chrono::Utc>,
    /// Viewers let in at once (1..100,000); no limit when absent.
    #[schema(minimum = 1, maximum = 100000)]
    max_participants: Option<i32>,
}

/// A stream as its scheduling made it: what the read model will show.
fn scheduled(done: &Executed<Stream>) -> Option<StreamView> {
    StreamView::of(&done.aggregate, done.version)
}

#[tracing::instrument(skip_all)]
async fn schedule(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    command: Command<NewStream>,
) -> Result<Response, ApiError> {
    let Command { principal, body, door, .. } = command;
    let render = |done: &Executed<Stream>| answer(StatusCode::CREATED, json!(scheduled(done)), done.cursor);
    let idempotency = door.idempotency(&render);
    let outcome = state
        .app
        .creator
        .schedule_stream(
            &principal.ctx,
            id,
            &body.title,
            body.starts_at,
            body.max_participants,
            idempotency.as_ref(),
        )
        .await?;
    Ok(door.answer(outcome, &render))
}
