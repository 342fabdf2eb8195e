//! `/api/v1/access_grants`: who may see which experience, given and taken back by members with
//! `spaces.manage`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use parley_aggregates::creator::{AccessGrant, GrantSource};
use parley_aggregates::permissions::Permission;
use parley_commands::Executed;
use parley_projections::read_models::creator::query::{self as creator, GrantView};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::door::{answer, Command};
use crate::http::error::{ApiError, Code};
use crate::http::extract::{ApiPath, ApiQuery, Pagination, Reading};
use crate::http::openapi::Doc;
use crate::http::respond::{envelope, no_content, respond};
use crate::http::state::AppState;

const MANAGE: &str = "spaces.manage";

pub fn router() -> Routes {
    Routes::default()
        .get("/access_grants", list)
        .doc(
            Doc::new("The account's grants, newest first, of a user and/or an experience")
                .permission(MANAGE)
                .query::<Filters>()
                .paged::<GrantView>()
                .reads(),
        )
        .post("/access_grants", create)
        .doc(
            Doc::new("Give a user of the account access to an experience, until `expires_at` when given")
                .permission(MANAGE)
                .body::<NewGrant>()
                .answers::<GrantView>(201)
                .errors(&[Code::NotFound]),
        )
        .delete("/access_grants/{id}", revoke)
        .doc(
            Doc::new("Take a grant back (an ended one: 409)")
                .permission(MANAGE)
                .no_content()
                .errors(&[Code::Conflict]),
        )
}

#[derive(Deserialize, utoipa::IntoParams)]
struct Filters {
    user_id: Option<Uuid>,
    experience_id: Option<Uuid>,
}

#[tracing::instrument(skip_all)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    reads: Reading,
    ApiQuery(f): ApiQuery<Filters>,
    page: Pagination,
) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::SpacesManage)?;
    let now = state.app.creator.now();
    let (items, total) = creator::grants(
        &reads.get(),
        principal.account_id(),
        f.user_id,
        f.experience_id,
        now,
        page.per_page,
        page.offset(),
    )
    .await?;
    Ok(respond(StatusCode::OK, envelope(json!(items), page.meta(total), None), None))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct NewGrant {
    user_id: Uuid,
    experience_id: Uuid,
    /// In the future; no end when absent.
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A grant as it was given: what the read model will show.
fn given(done: &Executed<AccessGrant>) -> Option<GrantView> {
    let g = &done.aggregate;
    let appended = done.appended.last()?;
    let source = match done.events.last()? {
        parley_aggregates::creator::AccessGrantEvent::AccessGranted {
            source: GrantSource::Checkout { .. },
            ..
        } => "checkout",
        _ => "manual",
    };
    Some(GrantView {
        id: g.id?,
        user_id: g.user_id?,
        experience_id: g.experience_id?,
        expires_at: g.expires_at,
        status: "active".into(),
        source: source.into(),
        created_at: appended.recorded_at,
        ended_at: None,
        version: done.version,
    })
}

#[tracing::instrument(skip_all)]
async fn create(State(state): State<AppState>, command: Command<NewGrant>) -> Result<Response, ApiError> {
    let Command { principal, body, door, .. } = command;
    let render = |done: &Executed<AccessGrant>| answer(StatusCode::CREATED, json!(given(done)), done.cursor);
    let idempotency = door.idempotency(&render);
    let outcome = state
        .app
        .creator
        .grant_access(&principal.ctx, body.user_id, body.experience_id, body.expires_at, idempotency.as_ref())
        .await?;
    Ok(door.answer(outcome, &render))
}

#[tracing::instrument(skip_all)]
async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let done = state.app.creator.revoke_grant(&principal.ctx, id).await?;
    done.cursor.map(no_content).ok_or_else(ApiError::not_found)
}
