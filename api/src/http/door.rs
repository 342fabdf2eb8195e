//! The one door for commands over HTTP. A command's handler takes a [`Command`] (a JSON body) or
//! a [`BodilessCommand`]: who asks, what they sent and, when the request carries an
//! `Idempotency-Key`, the key scoped to (account, credential, method, path) with the body's hash.
//! The handler hands [`Door::idempotency`] to the command, which checks the key and stores the
//! answer in the command's own transaction, and answers through [`Door::answer`], which marks a
//! replay. Endpoints whose answer carries a secret are routed with `Routes::post_secret`, which
//! refuses the header before the handler runs (a stored answer would keep the secret).

use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use futures::future::BoxFuture;
use parley_commands::{DispatchError, Idempotency, Idempotent};
use parley_eventstore::idempotency::{self, IdempotencyCheck, IdempotencyKey, StoredResponse};
use parley_eventstore::{EventStore, LogCursor};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};

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

    /// Runs an operation that appends no event (operational state, such as the job queue) under
    /// this door's key: the key is checked, and the answer stored, in the operation's own
    /// transaction, as commands do. A client error is stored too; a server error is not.
    pub async fn operate<T, F>(
        &self,
        pool: &PgPool,
        render: &Render<'_, T>,
        operation: F,
    ) -> Result<Response, ApiError>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, ApiError>>,
    {
        let mut tx = pool.begin().await?;
        if let Some(key) = &self.key {
            match idempotency::check(&mut tx, key).await? {
                IdempotencyCheck::New => {}
                IdempotencyCheck::Replay(stored) => return Ok(respond::replayed(stored)),
                IdempotencyCheck::Mismatch => return Err(DispatchError::IdempotencyKeyReused.into()),
                IdempotencyCheck::InProgress => return Err(DispatchError::IdempotencyInProgress.into()),
            }
        }
        let value = match operation(&mut tx).await {
            Ok(value) => value,
            Err(refused) => {
                tx.rollback().await?;
                if let (Some(key), true) = (&self.key, refused.status().is_client_error()) {
                    let stored = StoredResponse {
                        status: refused.status().as_u16(),
                        body: refused.body(),
                        position: None,
                    };
                    let mut tx = pool.begin().await?;
                    if let IdempotencyCheck::New = idempotency::check(&mut tx, key).await? {
                        idempotency::record(&mut tx, key, &stored).await?;
                        tx.commit().await?;
                    }
                }
                return Err(refused);
            }
        };
        let answer = render(&value);
        if let Some(key) = &self.key {
            idempotency::record(&mut tx, key, &answer).await?;
        }
        tx.commit().await?;
        Ok(respond::stored_response(answer))
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

/// The request's full path (as the client sent it, not as a nested router sees it), ids in their
/// canonical form: the same resource is the same scope however its id was written.
fn scope_path(parts: &Parts) -> String {
    let path = parts.extensions.get::<OriginalUri>().map_or(parts.uri.path(), |u| u.0.path());
    path.split('/')
        .map(|segment| segment.parse::<uuid::Uuid>().map_or_else(|_| segment.to_owned(), |id| id.to_string()))
        .collect::<Vec<_>>()
        .join("/")
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
        let door = Door::new(&principal, parts.method.as_str(), &scope_path(parts), key, &Value::Null);
        Ok(Self { principal, door })
    }
}
