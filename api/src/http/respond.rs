//! The success envelope, positions and idempotent answers.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use parley_commands::{DispatchError, Idempotent};
use parley_eventstore::idempotency::{request_hash, IdempotencyKey, StoredResponse};
use parley_eventstore::LogCursor;
use serde_json::{json, Value};

use super::auth::Principal;
use super::error::ApiError;

pub const X_POSITION: HeaderName = HeaderName::from_static("x-position");

/// `{"success": true, "data": ..., "meta": {...}}`, with `meta.position` and `X-Position` when
/// the answer reflects a position in the log.
pub fn envelope(data: Value, meta: Value, position: Option<LogCursor>) -> Value {
    let mut meta = if meta.is_object() { meta } else { json!({}) };
    if let (Some(p), Some(m)) = (position, meta.as_object_mut()) {
        m.insert("position".into(), json!(p.to_string()));
    }
    json!({"success": true, "data": data, "meta": meta})
}

pub fn respond(status: StatusCode, body: Value, position: Option<LogCursor>) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(p) = position.and_then(|p| HeaderValue::from_str(&p.to_string()).ok()) {
        response.headers_mut().insert(X_POSITION, p);
    }
    response
}

/// 204 for a command with nothing to show: the position in `X-Position` only.
pub fn no_content(position: LogCursor) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(p) = HeaderValue::from_str(&position.to_string()) {
        response.headers_mut().insert(X_POSITION, p);
    }
    response
}

pub fn ok(data: Value, position: Option<LogCursor>) -> Response {
    respond(StatusCode::OK, envelope(data, json!({}), position), position)
}

pub fn created(data: Value, position: Option<LogCursor>) -> Response {
    respond(StatusCode::CREATED, envelope(data, json!({}), position), position)
}

/// The key of a request, scoped to (account, credential, method, path) and hashing its body.
pub fn scoped_key(
    principal: &Principal,
    method: &str,
    path: &str,
    key: &str,
    body: &Value,
) -> IdempotencyKey {
    IdempotencyKey {
        account_id: principal.account_id(),
        scope: format!("{}:{method}:{path}", principal.credential_scope()),
        key: key.to_owned(),
        request_hash: request_hash(body),
    }
}

/// How a command's outcome is stored under an idempotency key: the whole answer, envelope
/// included, so a replay is byte-for-byte the original.
pub fn stored(status: StatusCode, body: Value, position: Option<LogCursor>) -> StoredResponse {
    StoredResponse { status: status.as_u16(), body, position }
}

/// Client errors are stored under the key too; server errors are not.
pub fn stored_error(e: &DispatchError) -> Option<StoredResponse> {
    let api = ApiError::from(clone_client_error(e)?);
    api.status().is_client_error().then(|| StoredResponse {
        status: api.status().as_u16(),
        body: api.body(),
        position: None,
    })
}

/// The client errors among dispatch errors, rebuilt (they carry no resources to clone).
fn clone_client_error(e: &DispatchError) -> Option<DispatchError> {
    Some(match e {
        DispatchError::Domain(d) => DispatchError::Domain(d.clone()),
        DispatchError::Forbidden(m) => DispatchError::Forbidden(m.clone()),
        DispatchError::NotFound(w) => DispatchError::NotFound(w),
        DispatchError::Unauthenticated => DispatchError::Unauthenticated,
        DispatchError::SessionRevoked(s) => DispatchError::SessionRevoked(*s),
        DispatchError::PreconditionFailed { current } => {
            DispatchError::PreconditionFailed { current: *current }
        }
        DispatchError::Claimed { kind, holder } => DispatchError::Claimed { kind, holder: holder.clone() },
        DispatchError::Invalid { field, message } => {
            DispatchError::Invalid { field, message: message.clone() }
        }
        _ => return None,
    })
}

/// The answer to an idempotent command: `render`ed when fresh, else the stored answer marked as
/// replayed.
pub fn idempotent<T>(outcome: Idempotent<T>, render: &dyn Fn(&T) -> StoredResponse) -> Response {
    match outcome {
        Idempotent::Fresh(t) => stored_response(render(&t)),
        Idempotent::Replayed(r) => replayed(r),
    }
}

/// A stored answer given again, marked `Idempotent-Replayed: true`.
pub fn replayed(stored: StoredResponse) -> Response {
    let mut answer = stored_response(stored);
    answer.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    answer
}

/// A stored (or about to be stored) answer as a response; a resource with a `version` gets its
/// `ETag`, fresh or replayed alike.
pub fn stored_response(response: StoredResponse) -> Response {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
    let version = response.body["data"]["version"].as_i64().filter(|_| status.is_success());
    let answer = match (status, response.position) {
        (StatusCode::NO_CONTENT, Some(position)) => no_content(position),
        _ => respond(status, response.body, response.position),
    };
    match version {
        Some(version) => with_etag(answer, version),
        None => answer,
    }
}

/// Sets `ETag: "<version>"`, the version `If-Match` takes back.
pub fn with_etag(mut response: Response, version: i64) -> Response {
    if let Ok(etag) = axum::http::HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(axum::http::header::ETAG, etag);
    }
    response
}
