//! `/api/v1/admin/projections`: where each read model is (`projections.manage`), and a rebuild
//! from the log as a job. Projections serve every account: what they show is the platform's.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use parley_aggregates::permissions::Permission;
use parley_projections::{events_between, list, positions_in};
use serde_json::{json, Value};

use super::Routes;
use crate::http::auth::Principal;
use crate::http::door::{answer, BodilessCommand};
use crate::http::error::ApiError;
use crate::http::extract::ApiPath;
use crate::http::openapi::schemas::string_schema;
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

/// Every projection generation that is not retired, a rebuilding one next to its live one; with
/// a replica, where the replica's copy of it is.
#[tracing::instrument(skip_all)]
async fn projections(State(state): State<AppState>, principal: Principal) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::ProjectionsManage)?;
    let on_replica = match &state.app.replica {
        // A replica that does not answer shows as down, with no positions.
        Some(replica) => Some((replica.status(), positions_in(replica.pool()).await.unwrap_or_default())),
        None => None,
    };
    let mut shown = Vec::new();
    for s in list(&state.app.store).await? {
        let replica = match &on_replica {
            None => Value::Null,
            Some((status, positions)) => {
                let copy = positions.iter().find(|(n, g, _)| *n == s.name && *g == s.generation).map(|p| p.2);
                let lag = match copy {
                    Some(at) => Some(events_between(&state.app.store, at, s.position).await?),
                    None => None,
                };
                json!({
                    "status": status.status, "lag_seconds": status.lag_seconds,
                    "position": copy.map(|c| c.to_string()), "lag": lag,
                })
            }
        };
        shown.push(json!({
            "name": s.name, "generation": s.generation, "version": s.version, "status": s.status,
            "position": s.position.to_string(), "lag": s.lag, "lag_seconds": s.lag_seconds,
            "events_applied": s.events_applied, "last_error": s.last_error, "updated_at": s.updated_at,
            "replica": replica,
        }));
    }
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
