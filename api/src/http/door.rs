//! The one door for commands over HTTP. A command's handler takes a [`Command`] (a JSON body) or
//! a [`BodilessCommand`]: who asks, what they sent and, when the request carries an
//! `Idempotency-Key`, the key scoped to (account, credential, method, path) with the body's hash.
//! The handler hands [`Door::idempotency`] to the command, which checks the key and stores the
//! answer in the command's own transaction, and answers through [`Door::answer`], which marks a
//! replay. Endpoints whose answer carries a secret are routed with `Routes::post_secret`, which
//! refuses the header before the handler runs (a stored answer would keep the secret).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use parley_commands::{DispatchError, Idempotency, Idempotent};
use parley_eventstore::idempotency::{self, IdempotencyCheck, IdempotencyKey, StoredResponse};
use parley_eventstore::{EventStore, LogCursor};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::auth::Principal;
use super::error::ApiError;
use super::extract::{ApiJson, IdempotencyKeyHeader};
use super::respond::{self, envelope, idempotent, scoped_key, stored, stored_error};
use super::state::AppState;

/// A command's request with a JSON body `T`.
pub struct Command<T> {
    pub principal: Principal,
    pub body: T,
    /// The body as sent (PATCH-style handlers read which fields are present).
    pub raw: Value,
    pub door: Door,
}

/// A command's request without a body.
pub struct BodilessCommand {
    pub principal: Principal,
    pub door: Door,
}

/// The idempotency of one command request.
pub struct Door {
    key: Option<IdempotencyKey>,
}

/// How a command's outcome is answered (and stored under a key): built once per handler.
pub type Render<'a, T> = dyn Fn(&T) -> StoredResponse + Send + Sync + 'a;

impl Door {
    fn new(principal: &Principal, method: &str, path: &str, key: Option<String>, body: &Value) -> Self {
        Self { key: key.map(|k| scoped_key(principal, method, path, &k, body)) }
    }

    /// What the command needs to honour the key: check it, and store `render`'s answer with
    /// its events. `None` without a key.
    pub fn idempotency<'a, T>(&'a self, render: &'a Render<'a, T>) -> Option<Idempotency<'a, T>> {
        self.key.as_ref().map(|key| Idempotency { key, render, render_error: &stored_error })
    }

    /// The stored answer if this key was answered before, checked without running anything: for
    /// handlers that may answer without a command (nothing to change), so that a replay is
    /// still marked as one. The command's own check, in its transaction, stays the authority.
    pub async fn replayed(&self, store: &EventStore) -> Result<Option<Response>, ApiError> {
        let Some(key) = &self.key else { return Ok(None) };
        let mut conn = store.pool().acquire().await?;
        match idempotency::check(&mut conn, key).await? {
            IdempotencyCheck::New => Ok(None),
            IdempotencyCheck::Replay(stored) => Ok(Some(respond::replayed(stored))),
            IdempotencyCheck::Mismatch => Err(DispatchError::IdempotencyKeyReused.into()),
            IdempotencyCheck::InProgress => Err(DispatchError::IdempotencyInProgress.into()),
        }
    }

    /// The answer: `render`ed when the command ran now, or the stored answer marked
    /// `Idempotent-Replayed: true`.
    pub fn answer<T>(&self, outcome: Idempotent<T>, render: &Render<'_, T>) -> Response {
        idempotent(outcome, render)
    }
}

/// `data` answered with `status`, the position in `meta` and `X-Position`.
pub fn answer(status: StatusCode, data: Value, position: Option<LogCursor>) -> StoredResponse {
    stored(status, envelope(data, json!({}), position), position)
}

/// 204 with the position in `X-Position` (stored as such under a key).
pub fn no_content(position: LogCursor) -> StoredResponse {
    StoredResponse { status: StatusCode::NO_CONTENT.as_u16(), body: Value::Null, position: Some(position) }
}

impl<T: DeserializeOwned> FromRequest<AppState> for Command<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let principal = Principal::from_request_parts(&mut parts, state).await?;
        let IdempotencyKeyHeader(key) = IdempotencyKeyHeader::from_request_parts(&mut parts, state).await?;
        let (method, path) = (parts.method.clone(), parts.uri.path().to_owned());
        let ApiJson { value, raw } =
            ApiJson::<T>::from_request(Request::from_parts(parts, body), state).await?;
        let door = Door::new(&principal, method.as_str(), &path, key, &raw);
        Ok(Self { principal, body: value, raw, door })
    }
}

impl FromRequestParts<AppState> for BodilessCommand {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let IdempotencyKeyHeader(key) = IdempotencyKeyHeader::from_request_parts(parts, state).await?;
        let door = Door::new(&principal, parts.method.as_str(), parts.uri.path(), key, &Value::Null);
        Ok(Self { principal, door })
    }
}
