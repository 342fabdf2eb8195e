//! `/api/v1/admin/jobs`: the account's jobs and their dead set (`jobs.manage`). Job operations
//! are operational, not domain events: they append nothing to the log.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use parley_aggregates::permissions::Permission;
use parley_jobs::{Job, JobError, JobState, QueueName};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::door::{answer, BodilessCommand};
use crate::http::error::{ApiError, Code};
use crate::http::extract::{ApiPath, ApiQuery, Pagination};
use crate::http::openapi::Doc;
use crate::http::respond::{envelope, no_content, respond};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default()
        .get("/admin/jobs", list)
        .doc(
            Doc::new("The account's jobs, newest first")
                .permission("jobs.manage")
                .query::<Filters>()
                .paged::<Job>(),
        )
        .post("/admin/jobs/{id}/retry", retry)
        .doc(
            Doc::new("Run a discarded or retryable job again now")
                .permission("jobs.manage")
                .answers::<Job>(200)
                .errors(&[Code::Conflict]),
        )
        .delete("/admin/jobs/{id}", discard)
        .doc(
            Doc::new("Cancel a waiting job, or delete a discarded one")
                .permission("jobs.manage")
                .no_content()
                .errors(&[Code::Conflict]),
        )
}

#[derive(Deserialize, utoipa::IntoParams)]
struct Filters {
    /// `available`, `scheduled`, `running`, `retryable`, `completed`, `discarded` or `cancelled`.
    state: Option<String>,
    queue: Option<String>,
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::NotFound => ApiError::not_found(),
            JobError::Conflict(state) => ApiError::new(Code::Conflict, format!("the job is {state}"))
                .with_details(json!({"state": [state]})),
            JobError::Database(e) => e.into(),
        }
    }
}

/// The account's jobs, newest first; `state` and `queue` filter.
#[tracing::instrument(skip_all)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    page: Pagination,
    ApiQuery(filters): ApiQuery<Filters>,
) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::JobsManage)?;
    let job_state = filters
        .state
        .map(|s| s.parse::<JobState>())
        .transpose()
        .map_err(|e| ApiError::new(Code::BadRequest, format!("bad query parameter: state: {e}")))?;
    let queue = filters
        .queue
        .map(|q| q.parse::<QueueName>())
        .transpose()
        .map_err(|e| ApiError::new(Code::BadRequest, format!("bad query parameter: queue: {e}")))?;
    let found = state
        .app
        .jobs
        .list(Some(principal.account_id()), job_state, queue, page.per_page, page.offset())
        .await?;
    Ok(respond(StatusCode::OK, envelope(json!(found.jobs), page.meta(found.total), None), None))
}

/// A discarded or retryable job runs again now: 200 with the job; others 409.
#[tracing::instrument(skip_all)]
async fn retry(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    BodilessCommand { principal, door }: BodilessCommand,
) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::JobsManage)?;
    let account_id = principal.account_id();
    let render = |job: &Job| answer(StatusCode::OK, json!(job), None);
    let jobs = state.app.jobs.clone();
    let answered = door
        .operate(state.app.store.pool(), &render, |conn| {
            Box::pin(async move { Ok(jobs.retry_in(conn, Some(account_id), id).await?) })
        })
        .await?;
    state.app.jobs.wake().await;
    Ok(answered)
}

/// Cancels a job that has not run (available, scheduled, retryable) or deletes a discarded one:
/// 204; a running or finished job 409.
#[tracing::instrument(skip_all)]
async fn discard(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::JobsManage)?;
    state.app.jobs.cancel(Some(principal.account_id()), id).await?;
    let head = state.app.store.head().await?;
    Ok(no_content(head))
}
