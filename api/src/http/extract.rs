//! Extractors that answer bad input with the error envelope: malformed JSON 400, wrong
//! content type 415, too large 413, wrong fields 422, bad path ids 404, bad query 400.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use parley_eventstore::LogCursor;
use parley_projections::Reads;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::error::{ApiError, Code};
use super::state::AppState;
use crate::replica::ReadFrom;

/// A JSON body parsed into `T`, keeping the raw value (idempotency compares bodies as JSON).
pub struct ApiJson<T> {
    pub value: T,
    pub raw: Value,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(raw) = axum::Json::<Value>::from_request(req, state).await.map_err(json_rejection)?;
        if let Some(field) = nul_in(&raw, "") {
            let message = "must not contain NUL characters";
            return Err(ApiError::new(Code::ValidationFailed, format!("{field}: {message}"))
                .with_details(json!({ field: [message] })));
        }
        let value = serde_path_to_error::deserialize(&raw).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "body".to_owned() } else { path };
            let message = e.inner().to_string();
            // serde names a missing field in its message, not in the path.
            let (field, message) = match message.strip_prefix("missing field `") {
                Some(rest) => (rest.trim_end_matches('`').to_owned(), "is required".to_owned()),
                None => (field, message),
            };
            ApiError::new(Code::ValidationFailed, format!("{field}: {message}"))
                .with_details(json!({ field: [message] }))
        })?;
        Ok(Self { value, raw })
    }
}

/// The path (`title`, `member_ids[0]`, `metadata.name`) of the first string or key of `value`
/// holding a NUL character, which PostgreSQL cannot store in text or JSON: refused at the edge,
/// so no field of any body can reach a statement with one.
fn nul_in(value: &Value, at: &str) -> Option<String> {
    let join = |key: &str| if at.is_empty() { key.to_owned() } else { format!("{at}.{key}") };
    match value {
        Value::String(s) if s.contains('\0') => Some(if at.is_empty() { "body".into() } else { at.into() }),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| nul_in(v, &format!("{at}[{i}]"))),
        Value::Object(fields) => fields.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                return Some(join(&k.replace('\0', "\\u0000")));
            }
            nul_in(v, &join(k))
        }),
        _ => None,
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(Code::PayloadTooLarge, "request body is larger than 1 MiB")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::new(Code::UnsupportedMediaType, "expected Content-Type: application/json")
        }
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::new(Code::ValidationFailed, r.body_text()),
        _ => ApiError::new(Code::BadRequest, format!("malformed JSON: {}", r.body_text())),
    }
}

/// Path parameters; any that do not parse (a bad UUID) name a resource that does not exist.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|_| ApiError::not_found())
    }
}

/// Query parameters; a bad one is a 400.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| ApiError::new(Code::BadRequest, format!("bad query parameter: {}", e.body_text())))
    }
}

/// `X-Min-Position`: the log cursor read models must include before a query answers.
pub struct MinPosition(pub Option<LogCursor>);

impl<S: Send + Sync> FromRequestParts<S> for MinPosition {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get("x-min-position") {
            None => Ok(Self(None)),
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .map(|c| Self(Some(c)))
                .ok_or_else(|| ApiError::new(Code::BadRequest, "X-Min-Position is not a log cursor")),
        }
    }
}

/// A query's access to the read models, with the request's `X-Min-Position`: each query waits
/// on the read models it names before it reads (see [`parley_projections::Reads`]), on the
/// replica when [`crate::replica::route_reads`] sent the request there.
pub struct Reading {
    pool: sqlx::PgPool,
    min: Option<LogCursor>,
    wait: std::time::Duration,
}

impl Reading {
    pub fn get(&self) -> Reads<'_> {
        Reads::waiting_at_most(&self.pool, self.min, self.wait)
    }
}

impl FromRequestParts<AppState> for Reading {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let MinPosition(min) = MinPosition::from_request_parts(parts, state).await?;
        let (pool, wait) = match (parts.extensions.get(), &state.app.replica) {
            (Some(ReadFrom::Replica), Some(replica)) => (replica.pool().clone(), replica.max_lag()),
            _ => (state.app.store.pool().clone(), parley_projections::MAX_WAIT),
        };
        Ok(Self { pool, min, wait })
    }
}

/// `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub struct IdempotencyKeyHeader(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(v) = parts.headers.get("idempotency-key") else { return Ok(Self(None)) };
        match v.to_str() {
            Ok(s) if (1..=255).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) => {
                Ok(Self(Some(s.to_owned())))
            }
            _ => Err(ApiError::new(
                Code::BadRequest,
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )),
        }
    }
}

/// `If-Match`: absent (no check), `*` (any version), or a version as its ETag (`"3"`).
pub struct IfMatch(pub Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(v) = parts.headers.get("if-match") else { return Ok(Self(None)) };
        let text = v.to_str().unwrap_or_default().trim();
        if text == "*" {
            return Ok(Self(None));
        }
        text.trim_start_matches("W/").trim_matches('"').parse::<i64>().map(|n| Self(Some(n))).map_err(|_| {
            ApiError::new(Code::BadRequest, "If-Match must be \"*\" or a version ETag like \"3\"")
        })
    }
}

/// Page pagination (API.md, "Conventions"): `page` from 1 (default 1), `per_page` clamped to
/// 1..=100 (default 20). Other query parameters are left to the endpoint.
pub struct Pagination {
    pub page: i64,
    pub per_page: i64,
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
pub struct PageParams {
    /// From 1.
    page: Option<i64>,
    /// At most 100 (default 20).
    per_page: Option<i64>,
}

impl Pagination {
    /// Rows to skip.
    pub fn offset(&self) -> i64 {
        (self.page - 1).saturating_mul(self.per_page)
    }

    /// `meta` of a page of `total` rows.
    pub fn meta(&self, total: i64) -> Value {
        let total_pages = (total + self.per_page - 1) / self.per_page;
        json!({"pagination": {"page": self.page, "per_page": self.per_page, "total": total, "total_pages": total_pages}})
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Pagination {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ApiQuery(p) = ApiQuery::<PageParams>::from_request_parts(parts, state).await?;
        let page = p.page.unwrap_or(1);
        if page < 1 {
            return Err(ApiError::new(Code::BadRequest, "page starts at 1"));
        }
        Ok(Self { page, per_page: p.per_page.unwrap_or(20).clamp(1, 100) })
    }
}

/// Reads an optional string field of a PATCH body: absent (`None`), `null` (`Some(None)`: clear
/// it) or a string.
pub fn nullable_field(raw: &serde_json::Value, name: &str) -> Result<Option<Option<String>>, ApiError> {
    match raw.get(name) {
        None => Ok(None),
        Some(serde_json::Value::Null) => Ok(Some(None)),
        Some(serde_json::Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(ApiError::invalid(name, "must be a string or null")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::nul_in;

    #[test]
    fn a_nul_is_named_by_its_place_in_the_body() {
        assert_eq!(nul_in(&json!({"body": "a\u{0}b"}), ""), Some("body".into()));
        assert_eq!(nul_in(&json!({"ok": "x", "tags": ["a", "b\u{0}"]}), ""), Some("tags[1]".into()));
        assert_eq!(nul_in(&json!({"meta": {"name": "\u{0}"}}), ""), Some("meta.name".into()));
        assert_eq!(nul_in(&json!("\u{0}"), ""), Some("body".into()));
        assert_eq!(nul_in(&json!({"a\u{0}": 1}), ""), Some("a\\u0000".into()));
        assert_eq!(nul_in(&json!({"body": "fine", "n": 1, "list": [null, true]}), ""), None);
    }
}
