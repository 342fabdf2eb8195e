//! `/api/v1/audit/events`: the account's log, oldest first, secrets redacted.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use parley_aggregates::permissions::Permission;
use parley_eventstore::{EventFilter, LogCursor, RecordedEvent};
use parley_replay::{redacted, AsOf, ReplayError};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::consistency;
use crate::http::error::{ApiError, Code};
use crate::http::extract::{ApiPath, ApiQuery, MinPosition};
use crate::http::openapi::schemas::string_schema;
use crate::http::openapi::shapes::{AuditEvent, StreamState};
use crate::http::openapi::{Doc, Meta};
use crate::http::respond::{envelope, respond};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default()
        .get("/audit/events", events)
        .doc(
            Doc::new("The account's events, oldest first, cursor-paginated (`after` a log cursor)")
                .permission("audit.view")
                .query::<Query>()
                .lists::<AuditEvent>(Meta::Cursor)
                .reads(),
        )
        .get("/audit/streams/{stream_type}/{stream_id}", stream)
        .doc(
            Doc::new("An aggregate as it was (`as_of` a time or at `version`), with the events that made it")
                .permission("audit.view")
                .path_param("stream_type", string_schema())
                .path_param("stream_id", string_schema())
                .query::<AsOfQuery>()
                .answers::<StreamState>(200)
                .reads(),
        )
}

const MAX_LIMIT: i64 = 1000;
const DEFAULT_LIMIT: i64 = 100;

#[derive(Deserialize, utoipa::IntoParams)]
struct Query {
    stream_type: Option<String>,
    stream_id: Option<String>,
    event_type: Option<String>,
    actor_id: Option<Uuid>,
    correlation_id: Option<Uuid>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    after: Option<String>,
    limit: Option<i64>,
}

/// An event as the audit API shows it (API.md): callers redact it first.
fn audit_event(e: &RecordedEvent) -> Value {
    json!({
        "position": e.cursor().to_string(), "event_id": e.event_id, "event_type": e.event_type,
        "stream_type": e.stream_type, "stream_id": e.stream_id, "version": e.version,
        "data": e.payload, "metadata": e.metadata, "recorded_at": e.recorded_at,
    })
}

#[tracing::instrument(skip_all)]
async fn events(
    State(state): State<AppState>,
    principal: Principal,
    MinPosition(min): MinPosition,
    ApiQuery(q): ApiQuery<Query>,
) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::AuditView)?;
    let after = match q.after.as_deref() {
        None => LogCursor::START,
        Some(a) => a.parse().map_err(|_| ApiError::new(Code::BadRequest, "after is not a log cursor"))?,
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    consistency::log(&state, min).await?;
    let filter = EventFilter {
        account_id: Some(principal.account_id()),
        stream_type: q.stream_type,
        stream_id: q.stream_id,
        event_type: q.event_type,
        actor_id: q.actor_id,
        correlation_id: q.correlation_id,
        since: q.since,
        until: q.until,
        after,
    };
    let page = state.app.store.query(&filter, limit).await?;
    let next_cursor =
        (page.len() as i64 == limit).then(|| page.last().map(|e| e.cursor().to_string())).flatten();
    let events: Vec<Value> = page.into_iter().map(redacted).map(|e| audit_event(&e)).collect();
    Ok(respond(
        StatusCode::OK,
        envelope(json!(events), json!({"next_cursor": next_cursor, "limit": limit}), None),
        None,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
struct AsOfQuery {
    as_of: Option<DateTime<Utc>>,
    version: Option<i64>,
}

/// An aggregate of the caller's account as it was (at a time or a version), with the events
/// that made it. Another account's stream is not found.
#[tracing::instrument(skip_all)]
async fn stream(
    State(state): State<AppState>,
    principal: Principal,
    MinPosition(min): MinPosition,
    ApiPath((stream_type, stream_id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<AsOfQuery>,
) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::AuditView)?;
    let as_of = match (q.as_of, q.version) {
        (Some(_), Some(_)) => return Err(ApiError::new(Code::BadRequest, "give as_of or version, not both")),
        (Some(t), None) => AsOf::Time(t),
        (None, Some(v)) if v >= 1 => AsOf::Version(v),
        (None, Some(_)) => return Err(ApiError::new(Code::BadRequest, "version starts at 1")),
        (None, None) => AsOf::Latest,
    };
    consistency::log(&state, min).await?;
    let found = match parley_replay::state(&state.app.store, &stream_type, &stream_id, as_of).await {
        Ok(found) => found,
        Err(ReplayError::UnknownStreamType(_) | ReplayError::EmptyStream(_)) => {
            return Err(ApiError::not_found())
        }
        Err(ReplayError::Store(e)) => return Err(e.into()),
        Err(ReplayError::Database(e)) => return Err(e.into()),
        Err(e) => return Err(ApiError::internal(&e)),
    };
    if found.events.first().is_some_and(|e| e.account_id != principal.account_id()) {
        return Err(ApiError::not_found());
    }
    // `state` redacts what it returns.
    let events: Vec<Value> = found.events.iter().map(audit_event).collect();
    let data = json!({
        "stream_type": found.stream_type, "stream_id": found.stream_id, "version": found.version,
        "state": found.state, "events": events,
    });
    Ok(respond(StatusCode::OK, envelope(data, json!({}), None), None))
}
