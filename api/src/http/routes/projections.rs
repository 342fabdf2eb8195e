//! `/api/v1/admin/projections`: where each read model is (`projections.manage`), and a rebuild
//! from the log as a job. Projections serve every account: what they show is the platform's.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use parley_aggregates::permissions::Permission;
use parley_projections::list;
use serde_json::json;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::door::{answer, BodilessCommand};
use crate::http::error::ApiError;
use crate::http::extract::ApiPath;
use crate::http::openapi::document::string_schema;
use crate::http::openapi::shapes::{Projection, RebuildQueued};
use crate::http::openapi::{Doc, Meta};
use crate::http::respond::{envelope, respond};
use crate::http::state::AppState;
use crate::rebuilds;

pub fn router() -> Routes {
    Routes::default()
        .get("/admin/projections", projections)
        .doc(
            Doc::new("Every projection with its position and lag")
                .permission("projections.manage")
                .lists::<Projection>(Meta::Plain),
        )
        .post("/admin/projections/{name}/rebuild", rebuild)
        .doc(
            Doc::new("Rebuild a projection from the log as a job; its progress shows in the list")
                .permission("projections.manage")
                .path_param("name", string_schema())
                .answers::<RebuildQueued>(202),
        )
}

/// Every projection generation that is not retired, a rebuilding one next to its live one.
#[tracing::instrument(skip_all)]
async fn projections(State(state): State<AppState>, principal: Principal) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::ProjectionsManage)?;
    let shown: Vec<_> = list(&state.app.store)
        .await?
        .into_iter()
        .map(|s| {
            json!({
                "name": s.name, "generation": s.generation, "version": s.version, "status": s.status,
                "position": s.position.to_string(), "lag": s.lag, "lag_seconds": s.lag_seconds,
                "events_applied": s.events_applied, "last_error": s.last_error, "updated_at": s.updated_at,
            })
        })
        .collect();
    Ok(respond(StatusCode::OK, envelope(json!(shown), json!({}), None), None))
}

/// 202: the rebuild runs as a job (one at a time per projection); an unknown projection is 404.
#[tracing::instrument(skip_all)]
async fn rebuild(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    BodilessCommand { principal, door }: BodilessCommand,
) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::ProjectionsManage)?;
    let projection = state.app.projections.get(&name).ok_or_else(ApiError::not_found)?;
    let name = projection.name();
    let job = rebuilds::job(name).account(principal.account_id());
    let render = |job_id: &Option<uuid::Uuid>| {
        answer(StatusCode::ACCEPTED, json!({"name": name, "job_id": job_id}), None)
    };
    let jobs = state.app.jobs.clone();
    let answered = door
        .operate(state.app.store.pool(), &render, |conn| {
            Box::pin(async move { Ok(jobs.enqueue(conn, &job).await?) })
        })
        .await?;
    state.app.jobs.wake().await;
    Ok(answered)
}
