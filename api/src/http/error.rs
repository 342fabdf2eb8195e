//! The error envelope and the one table of error codes (API.md, "Conventions"): every error a
//! client can see is one of these, with exactly one status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use parley_aggregates::account::AccountError;
use parley_aggregates::api_key::ApiKeyError;
use parley_aggregates::call::CallError;
use parley_aggregates::conversation::ConversationError;
use parley_aggregates::creator::{AccessGrantError, ExperienceError, SpaceError, StreamError};
use parley_aggregates::role::RoleError;
use parley_aggregates::session::SessionError;
use parley_aggregates::user::UserError;
use parley_aggregates::webhook::{IncomingWebhookError, WebhookSubscriptionError};
use parley_aggregates::DomainError;
use parley_commands::DispatchError;
use parley_eventstore::StoreError;
use parley_projections::ProjectionError;
use serde_json::{json, Value};

/// Every error code a client can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    EmailTaken,
    PreconditionFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    InvitationInvalid,
    RateLimited,
    InternalError,
    ServiceUnavailable,
    ProjectionLagging,
    IdempotencyKeyReused,
    IdempotencyInProgress,
    IdempotencyNotSupported,
}

impl Code {
    /// Every code, for listings and tests.
    pub const ALL: [Code; 19] = [
        Code::BadRequest,
        Code::Unauthorized,
        Code::Forbidden,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::Conflict,
        Code::EmailTaken,
        Code::PreconditionFailed,
        Code::PayloadTooLarge,
        Code::UnsupportedMediaType,
        Code::ValidationFailed,
        Code::InvitationInvalid,
        Code::RateLimited,
        Code::InternalError,
        Code::ServiceUnavailable,
        Code::ProjectionLagging,
        Code::IdempotencyKeyReused,
        Code::IdempotencyInProgress,
        Code::IdempotencyNotSupported,
    ];

    /// The table: code, status.
    pub fn describe(self) -> (&'static str, StatusCode) {
        use Code::*;
        match self {
            BadRequest => ("bad_request", StatusCode::BAD_REQUEST),
            Unauthorized => ("unauthorized", StatusCode::UNAUTHORIZED),
            Forbidden => ("forbidden", StatusCode::FORBIDDEN),
            NotFound => ("not_found", StatusCode::NOT_FOUND),
            MethodNotAllowed => ("method_not_allowed", StatusCode::METHOD_NOT_ALLOWED),
            Conflict => ("conflict", StatusCode::CONFLICT),
            EmailTaken => ("email_taken", StatusCode::CONFLICT),
            PreconditionFailed => ("precondition_failed", StatusCode::PRECONDITION_FAILED),
            PayloadTooLarge => ("payload_too_large", StatusCode::PAYLOAD_TOO_LARGE),
            UnsupportedMediaType => ("unsupported_media_type", StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ValidationFailed => ("validation_failed", StatusCode::UNPROCESSABLE_ENTITY),
            InvitationInvalid => ("invitation_invalid", StatusCode::UNPROCESSABLE_ENTITY),
            RateLimited => ("rate_limited", StatusCode::TOO_MANY_REQUESTS),
            InternalError => ("internal_error", StatusCode::INTERNAL_SERVER_ERROR),
            ServiceUnavailable => ("service_unavailable", StatusCode::SERVICE_UNAVAILABLE),
            ProjectionLagging => ("projection_lagging", StatusCode::SERVICE_UNAVAILABLE),
            IdempotencyKeyReused => ("idempotency_key_reused", StatusCode::UNPROCESSABLE_ENTITY),
            IdempotencyInProgress => ("idempotency_in_progress", StatusCode::CONFLICT),
            IdempotencyNotSupported => ("idempotency_not_supported", StatusCode::BAD_REQUEST),
        }
    }
}

/// An error answer: `{"success": false, "error", "code", "details"}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub details: Value,
    pub retry_after: Option<u64>,
    /// The database failed the request (unreachable, a standby's recovery conflict, read models
    /// behind the position asked for): another copy of the data may answer it (see
    /// [`crate::replica::route_reads`]).
    pub try_another_copy: bool,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: json!({}), retry_after: None, try_another_copy: false }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 422 naming one field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(Code::ValidationFailed, format!("{field} {message}"))
            .with_details(json!({ field: [message] }))
    }

    pub fn not_found() -> Self {
        Self::new(Code::NotFound, "not found")
    }

    pub fn unauthorized() -> Self {
        Self::new(Code::Unauthorized, "authentication required")
    }

    /// A server-side failure: logged here (inside the request's span, with its request id),
    /// never shown to the client.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(Code::InternalError, "something went wrong on our side")
    }

    pub fn status(&self) -> StatusCode {
        self.code.describe().1
    }

    /// The envelope body.
    pub fn body(&self) -> Value {
        json!({"success": false, "error": self.message, "code": self.code.describe().0, "details": self.details})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.try_another_copy {
            response.extensions_mut().insert(crate::replica::TryAnotherCopy);
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let message = e.to_string();
        let code = match &e {
            DomainError::Account(AccountError::AlreadyOpen | AccountError::LastOwner) => Code::Conflict,
            DomainError::Account(AccountError::NotFound) => Code::NotFound,
            DomainError::User(UserError::AlreadyRegistered) => Code::Conflict,
            DomainError::User(UserError::NoRole) => return ApiError::invalid("roles", message),
            DomainError::User(UserError::NotFound) => Code::NotFound,
            DomainError::User(UserError::NotActive) => Code::Conflict,
            DomainError::User(UserError::CannotDeactivateSelf) => Code::Forbidden,
            DomainError::Session(SessionError::AlreadyStarted) => Code::Conflict,
            DomainError::Session(SessionError::NotActive | SessionError::Expired) => Code::Unauthorized,
            DomainError::Invitation(_) => Code::InvitationInvalid,
            DomainError::Role(RoleError::NotFound) => Code::NotFound,
            DomainError::Role(RoleError::AlreadyCreated) => Code::Conflict,
            DomainError::ApiKey(ApiKeyError::NotFound) => Code::NotFound,
            DomainError::Inbox(_) => Code::NotFound,
            DomainError::ApiKey(ApiKeyError::AlreadyCreated) => Code::Conflict,
            DomainError::WebhookSubscription(WebhookSubscriptionError::NotFound) => Code::NotFound,
            DomainError::WebhookSubscription(WebhookSubscriptionError::AlreadyCreated) => Code::Conflict,
            DomainError::IncomingWebhook(IncomingWebhookError::NotFound) => Code::NotFound,
            DomainError::IncomingWebhook(IncomingWebhookError::AlreadyCreated) => Code::Conflict,
            DomainError::Call(CallError::NotFound | CallError::NotInvited | CallError::NotAParticipant) => {
                Code::NotFound
            }
            DomainError::Call(CallError::Over | CallError::AlreadyAnswered | CallError::AlreadyStarted) => {
                Code::Conflict
            }
            DomainError::Space(SpaceError::NotFound) => Code::NotFound,
            DomainError::Space(SpaceError::AlreadyCreated | SpaceError::Primary) => Code::Conflict,
            DomainError::Experience(ExperienceError::NotFound) => Code::NotFound,
            DomainError::Experience(ExperienceError::AlreadyCreated) => Code::Conflict,
            DomainError::Stream(StreamError::NotFound) => Code::NotFound,
            DomainError::Stream(
                StreamError::AlreadyCreated
                | StreamError::NotScheduled(_)
                | StreamError::NotLive(_)
                | StreamError::NotEnded,
            ) => Code::Conflict,
            DomainError::AccessGrant(AccessGrantError::NotFound) => Code::NotFound,
            DomainError::AccessGrant(
                AccessGrantError::AlreadyCreated | AccessGrantError::Ended | AccessGrantError::NotExpired,
            ) => Code::Conflict,
            DomainError::Conversation(c) => match c {
                // A conversation one is not part of does not exist, as far as one can tell.
                ConversationError::NotFound | ConversationError::NotAMember => Code::NotFound,
                ConversationError::NotAnAdmin => Code::Forbidden,
                ConversationError::AlreadyStarted
                | ConversationError::Archived
                | ConversationError::AlreadyAMember => Code::Conflict,
                ConversationError::NotAGroup => return ApiError::invalid("kind", message),
                ConversationError::NoSuchMember
                | ConversationError::MessageNotFound
                | ConversationError::ReactionNotFound => Code::NotFound,
                ConversationError::NotTheAuthor => Code::Forbidden,
                ConversationError::MessageDeleted => Code::Conflict,
                ConversationError::StaleMessage { current } => {
                    return ApiError::new(Code::PreconditionFailed, message)
                        .with_details(json!({"version": current}))
                }
            },
        };
        ApiError::new(code, message)
    }
}

impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> Self {
        match e {
            DispatchError::Domain(d) => d.into(),
            DispatchError::Forbidden(m) => ApiError::new(Code::Forbidden, m),
            DispatchError::Unauthenticated => ApiError::new(Code::Unauthorized, "invalid credentials"),
            DispatchError::SessionRevoked(_) => ApiError::new(Code::Unauthorized, "the session has ended"),
            DispatchError::PreconditionFailed { current } => {
                ApiError::new(Code::PreconditionFailed, format!("the resource is at version {current}"))
                    .with_details(json!({"version": current}))
            }
            DispatchError::NotFound(what) => {
                ApiError::new(Code::NotFound, format!("{} not found", what.to_lowercase()))
            }
            DispatchError::Claimed { kind: parley_commands::services::EMAIL_CLAIM, .. } => {
                ApiError::new(Code::EmailTaken, "email has already been taken")
                    .with_details(json!({"email": ["has already been taken"]}))
            }
            DispatchError::Claimed { kind: parley_commands::calls::LIVE_CALL_CLAIM, holder } => {
                ApiError::new(Code::Conflict, "the conversation has a live call")
                    .with_details(json!({"call_id": holder.stream_id}))
            }
            DispatchError::Claimed { kind, .. } => {
                ApiError::new(Code::Conflict, format!("{kind} is already taken"))
            }
            DispatchError::Invalid { field, message } => ApiError::invalid(field, message),
            DispatchError::IdempotencyKeyReused => ApiError::new(
                Code::IdempotencyKeyReused,
                "this Idempotency-Key was used with another request body",
            ),
            DispatchError::IdempotencyInProgress => ApiError::new(
                Code::IdempotencyInProgress,
                "a request with this Idempotency-Key is still in progress",
            ),
            DispatchError::Unavailable(why) => ApiError::new(Code::ServiceUnavailable, why).retry_after(1),
            DispatchError::Payload(e) => ApiError::internal(&e),
            DispatchError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Timeout(_) => lagging(),
            StoreError::Database(e) => e.into(),
            e => ApiError::internal(&e),
        }
    }
}

impl From<ProjectionError> for ApiError {
    fn from(e: ProjectionError) -> Self {
        match e {
            ProjectionError::Store(e) => e.into(),
            ProjectionError::Database(e) => e.into(),
            e => ApiError::internal(&e),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if parley_eventstore::is_unavailable(&e) {
            return unavailable(&e);
        }
        if crate::replica::is_refused_by_standby(&e) {
            tracing::warn!(error = %e, "a standby refused a query");
            let mut refused =
                ApiError::new(Code::ServiceUnavailable, "the query was refused; try again").retry_after(1);
            refused.try_another_copy = true;
            return refused;
        }
        ApiError::internal(&e)
    }
}

/// The database is restarting, stopped or out of reach: come back in a moment. Logged (with the
/// request id) as a warning, not an error: nothing is wrong with the request or the code.
pub fn unavailable(cause: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(error = %cause, "database unavailable");
    let mut refused =
        ApiError::new(Code::ServiceUnavailable, "the database is unavailable; try again shortly")
            .retry_after(1);
    refused.try_another_copy = true;
    refused
}

pub fn lagging() -> ApiError {
    let mut refused =
        ApiError::new(Code::ProjectionLagging, "read models have not caught up with that position yet")
            .retry_after(1);
    refused.try_another_copy = true;
    refused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_snake_case_and_unique() {
        let all = Code::ALL;
        let mut names: Vec<&str> = all.iter().map(|c| c.describe().0).collect();
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
        assert!(all.iter().all(|c| c.describe().1.is_client_error() || c.describe().1.is_server_error()));
    }
}
