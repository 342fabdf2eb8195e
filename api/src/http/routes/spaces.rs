//! `/api/v1/spaces`: an account's spaces (every member sees them; `spaces.manage` changes them)
//! and the experiences each holds (a member sees those they hold a live grant for).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use parley_aggregates::creator::{Experience, ExperienceEvent, Space, SpaceEvent};
use parley_aggregates::permissions::Permission;
use parley_commands::creator::ExperienceInput;
use parley_commands::Executed;
use parley_projections::read_models::creator::query::{self as creator, ExperienceView, SpaceView};
use parley_projections::Reads;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::door::{answer, Command};
use crate::http::error::{ApiError, Code};
use crate::http::extract::{nullable_field, ApiJson, ApiPath, IfMatch, Pagination, Reading};
use crate::http::openapi::Doc;
use crate::http::respond::{envelope, no_content, ok, respond, with_etag};
use crate::http::state::AppState;

const MANAGE: &str = "spaces.manage";

pub fn router() -> Routes {
    Routes::default()
        .get("/spaces", list)
        .doc(Doc::new("The account's spaces, the primary one first").paged::<SpaceView>().reads())
        .post("/spaces", create)
        .doc(
            Doc::new("Create a space; its slug (a-z, 0-9, -) is unique in the account")
                .permission(MANAGE)
                .body::<NewSpace>()
                .answers::<SpaceView>(201)
                .errors(&[Code::Conflict]),
        )
        .get("/spaces/{id}", show)
        .doc(Doc::new("A space with its experience count").answers::<SpaceView>(200).etag().reads())
        .patch("/spaces/{id}", update)
        .doc(
            Doc::new("Change a space's name, slug or description (`null` clears it)")
                .permission(MANAGE)
                .body::<SpaceChanges>()
                .answers::<SpaceView>(200)
                .if_match()
                .errors(&[Code::Conflict]),
        )
        .delete("/spaces/{id}", delete)
        .doc(Doc::new("Delete a space (not the primary one: 409)").permission(MANAGE).no_content().errors(&[Code::Conflict]))
        .get("/spaces/{id}/experiences", experiences)
        .doc(
            Doc::new("A space's experiences: all for managers, those one holds a live grant for otherwise")
                .paged::<ExperienceView>()
                .reads(),
        )
        .post("/spaces/{id}/experiences", create_experience)
        .doc(
            Doc::new("Create an experience in the space")
                .describe("The description keeps at most 5,000 characters as given; HTML is stripped before storing.")
                .permission(MANAGE)
                .body::<NewExperience>()
                .answers::<ExperienceView>(201),
        )
}

#[derive(Deserialize, utoipa::ToSchema)]
struct NewSpace {
    #[schema(min_length = 1, max_length = 200, example = "Launches")]
    name: String,
    #[schema(pattern = "^[a-z0-9-]{1,63}$", example = "launches")]
    slug: String,
    #[schema(max_length = 5000)]
    description: Option<String>,
}

/// `PATCH /spaces/{id}`: what is given changes; `"description": null` clears it.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
struct SpaceChanges {
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    #[schema(pattern = "^[a-z0-9-]{1,63}$")]
    slug: Option<String>,
    #[schema(nullable, max_length = 5000)]
    description: Option<String>,
}

/// A space as its creation made it: what the read model will show.
fn created_space(done: &Executed<Space>) -> Option<SpaceView> {
    let (SpaceEvent::SpaceCreated { space_id, name, slug, description, is_primary, .. }, appended) =
        (done.events.last()?, done.appended.last()?)
    else {
        return None;
    };
    Some(SpaceView {
        id: *space_id,
        name: name.clone(),
        slug: slug.clone(),
        description: description.clone(),
        is_primary: *is_primary,
        experiences_count: 0,
        created_at: appended.recorded_at,
        updated_at: appended.recorded_at,
        version: done.version,
    })
}

#[tracing::instrument(skip_all)]
async fn list(principal: Principal, reads: Reading, page: Pagination) -> Result<Response, ApiError> {
    let (items, total) =
        creator::spaces(&reads.get(), principal.account_id(), page.per_page, page.offset()).await?;
    Ok(respond(StatusCode::OK, envelope(json!(items), page.meta(total), None), None))
}

#[tracing::instrument(skip_all)]
async fn create(State(state): State<AppState>, command: Command<NewSpace>) -> Result<Response, ApiError> {
    let Command { principal, body, door, .. } = command;
    let render =
        |done: &Executed<Space>| answer(StatusCode::CREATED, json!(created_space(done)), done.cursor);
    let idempotency = door.idempotency(&render);
    let outcome = state
        .app
        .creator
        .create_space(
            &principal.ctx,
            &body.name,
            &body.slug,
            body.description.as_deref(),
            idempotency.as_ref(),
        )
        .await?;
    Ok(door.answer(outcome, &render))
}

#[tracing::instrument(skip_all)]
async fn show(
    principal: Principal,
    reads: Reading,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let space =
        creator::space(&reads.get(), principal.account_id(), id).await?.ok_or_else(ApiError::not_found)?;
    let version = space.version;
    Ok(with_etag(ok(json!(space), None), version))
}

/// Answers the space as the read model has it once it includes the change.
#[tracing::instrument(skip_all)]
async fn update(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    IfMatch(expected): IfMatch,
    ApiJson { raw, .. }: ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<Response, ApiError> {
    let text = |field: &str| -> Result<Option<String>, ApiError> {
        match nullable_field(&raw, field)? {
            Some(Some(v)) => Ok(Some(v)),
            Some(None) => Err(ApiError::invalid(field, "cannot be cleared")),
            None => Ok(None),
        }
    };
    let (name, slug) = (text("name")?, text("slug")?);
    let description = nullable_field(&raw, "description")?;
    let done = state
        .app
        .creator
        .update_space(
            &principal.ctx,
            id,
            name.as_deref(),
            slug.as_deref(),
            description.as_ref().map(|d| d.as_deref()),
            expected,
        )
        .await?;
    let reads = Reads::new(state.app.store.pool(), done.cursor);
    let space = creator::space(&reads, principal.account_id(), id).await?.ok_or_else(ApiError::not_found)?;
    let version = space.version;
    Ok(with_etag(ok(json!(space), done.cursor), version))
}

#[tracing::instrument(skip_all)]
async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let done = state.app.creator.delete_space(&principal.ctx, id).await?;
    done.cursor.map(no_content).ok_or_else(ApiError::not_found)
}

#[tracing::instrument(skip_all)]
async fn experiences(
    State(state): State<AppState>,
    principal: Principal,
    reads: Reading,
    ApiPath(id): ApiPath<Uuid>,
    page: Pagination,
) -> Result<Response, ApiError> {
    let reads = reads.get();
    creator::space(&reads, principal.account_id(), id).await?.ok_or_else(ApiError::not_found)?;
    let viewer = viewer(&principal)?;
    let now = state.app.creator.now();
    let (items, total) =
        creator::experiences(&reads, principal.account_id(), id, viewer, now, page.per_page, page.offset())
            .await?;
    Ok(respond(StatusCode::OK, envelope(json!(items), page.meta(total), None), None))
}

/// Whose grants decide what the caller sees: nobody's for a manager (everything), the user's
/// otherwise; a key without `spaces.manage` has no grants, so it sees none.
pub(crate) fn viewer(principal: &Principal) -> Result<Option<Uuid>, ApiError> {
    if principal.ctx.actor.can(Permission::SpacesManage) {
        return Ok(None);
    }
    Ok(Some(principal.user_id().unwrap_or(Uuid::nil())))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct NewExperience {
    #[schema(min_length = 1, max_length = 100, example = "Launch week")]
    pub name: String,
    #[schema(max_length = 5000)]
    pub description: Option<String>,
    #[schema(
        pattern = "^(live_stream|course|community|consultation|digital_product)$",
        example = "live_stream"
    )]
    pub experience_type: String,
    #[schema(minimum = 0, maximum = 999999, example = 0)]
    pub price_cents: i64,
    /// ISO 4217, stored lowercase (default `usd`).
    #[schema(pattern = "^[A-Za-z]{3}$", example = "usd")]
    pub currency: Option<String>,
    pub published: Option<bool>,
}

/// An experience as its creation made it: what the read model will show.
pub(crate) fn created_experience(done: &Executed<Experience>) -> Option<ExperienceView> {
    let (ExperienceEvent::ExperienceCreated { experience_id, space_id, fields, .. }, appended) =
        (done.events.last()?, done.appended.last()?)
    else {
        return None;
    };
    Some(ExperienceView {
        id: *experience_id,
        space_id: *space_id,
        name: fields.name.clone(),
        description: fields.description.clone(),
        experience_type: fields.experience_type.name().to_owned(),
        price_cents: fields.price_cents,
        currency: fields.currency.clone(),
        published: fields.published,
        streams_count: 0,
        active_grants: 0,
        created_at: appended.recorded_at,
        updated_at: appended.recorded_at,
        version: done.version,
    })
}

#[tracing::instrument(skip_all)]
async fn create_experience(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    command: Command<NewExperience>,
) -> Result<Response, ApiError> {
    let Command { principal, body, door, .. } = command;
    let input = ExperienceInput {
        name: Some(body.name),
        description: body.description.map(Some),
        experience_type: Some(body.experience_type),
        price_cents: Some(body.price_cents),
        currency: body.currency,
        published: body.published,
    };
    let render = |done: &Executed<Experience>| {
        answer(StatusCode::CREATED, json!(created_experience(done)), done.cursor)
    };
    let idempotency = door.idempotency(&render);
    let outcome =
        state.app.creator.create_experience(&principal.ctx, id, &input, idempotency.as_ref()).await?;
    Ok(door.answer(outcome, &render))
}
