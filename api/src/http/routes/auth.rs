//! `/api/v1/auth`: register and log in.

use axum::extract::State;
use axum::http::request::Parts;
use axum::response::Response;
use parley_commands::services::{Registration, SessionStarted};
use parley_commands::{Actor, CommandContext, DispatchError};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Routes;
use crate::http::auth::{origin, Principal};
use crate::http::error::{ApiError, Code};
use crate::http::extract::ApiJson;
use crate::http::openapi::shapes::Tokens;
use crate::http::openapi::Doc;
use crate::http::respond::{created, ok};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default()
        .post_secret("/auth/register", register)
        .doc(
            Doc::new("Register: open an account, or join one with an invitation")
                .public()
                .body::<RegisterBody>()
                .answers::<Tokens>(201)
                .errors(&[Code::EmailTaken, Code::InvitationInvalid]),
        )
        .post_secret("/auth/login", login)
        .doc(
            Doc::new("Log in")
                .describe("Wrong credentials: 401, with the same message for an unknown email and a wrong password.")
                .public()
                .body::<LoginBody>()
                .answers::<Tokens>(200)
                .errors(&[Code::Unauthorized]),
        )
        .post_secret("/auth/refresh", refresh)
        .doc(
            Doc::new("Trade a refresh token for a new pair (the old one stops working)")
                .describe("Presenting a refresh token that was already rotated ends the whole session.")
                .public()
                .body::<RefreshBody>()
                .answers::<Tokens>(200)
                .errors(&[Code::Unauthorized]),
        )
        .delete("/auth/logout", logout)
        .doc(Doc::new("End the session: its access token is refused everywhere at once").no_content())
}

#[derive(Deserialize, ToSchema)]
#[schema(as = Registration)]
struct RegisterBody {
    #[schema(min_length = 1, max_length = 200, example = "Ann")]
    name: String,
    #[schema(format = Email, example = "ann@example.com")]
    email: String,
    /// At least 10 characters.
    #[schema(min_length = 10, max_length = 1024, example = "correct horse battery")]
    password: String,
    /// The new account's name (default: the user's).
    #[schema(min_length = 1, max_length = 200)]
    account_name: Option<String>,
    /// Join the inviting account instead of opening one (the email must match).
    invitation_token: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = Login)]
struct LoginBody {
    #[schema(format = Email, example = "ann@example.com")]
    email: String,
    #[schema(example = "correct horse battery")]
    password: String,
}

/// The request's id and address, extracted without failing.
pub struct Origin(Option<String>, Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let (request_id, client_ip) = origin(parts);
        Ok(Self(request_id, client_ip))
    }
}

/// Who a token pair was issued to.
struct Identity<'a> {
    user_id: Uuid,
    account_id: Uuid,
    account_name: &'a str,
    name: &'a str,
    email: &'a str,
    roles: &'a [String],
    /// The user's stream version (see the `rv` claim).
    user_version: i64,
}

fn tokens(state: &AppState, who: &Identity<'_>, session: &SessionStarted) -> Result<Value, ApiError> {
    let (access_token, expires_in) = state.jwt.issue(
        who.user_id,
        who.account_id,
        session.session_id,
        who.roles,
        who.user_version,
        session.cursor,
    )?;
    Ok(json!({
        "access_token": access_token,
        "refresh_token": session.refresh_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "user": {"id": who.user_id, "name": who.name, "email": who.email, "roles": who.roles, "account_id": who.account_id},
        "account": {"id": who.account_id, "name": who.account_name},
    }))
}

#[tracing::instrument(skip_all)]
async fn register(
    State(state): State<AppState>,
    Origin(request_id, client_ip): Origin,
    ApiJson { value: body, .. }: ApiJson<RegisterBody>,
) -> Result<Response, ApiError> {
    let commands = &state.app.commands;
    let registered = commands
        .register(Registration {
            name: body.name,
            email: body.email,
            password: body.password,
            account_name: body.account_name,
            invitation_token: body.invitation_token,
            request_id: request_id.clone(),
            client_ip: client_ip.clone(),
        })
        .await?;
    let mut ctx = CommandContext::new(registered.account_id, Actor::user(registered.user_id, Vec::new()));
    ctx.request_id = request_id;
    ctx.client_ip = client_ip;
    let session = commands.start_session(&ctx).await?;
    let who = Identity {
        user_id: registered.user_id,
        account_id: registered.account_id,
        account_name: &registered.account_name,
        name: &registered.name,
        email: &registered.email,
        roles: &registered.roles,
        // UserRegistered is the first event of the user's stream.
        user_version: 1,
    };
    Ok(created(tokens(&state, &who, &session)?, Some(session.cursor)))
}

#[tracing::instrument(skip_all)]
async fn login(
    State(state): State<AppState>,
    Origin(request_id, client_ip): Origin,
    ApiJson { value: body, .. }: ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    let email = body.email.trim().to_lowercase();
    // The attempt takes a slot first; only a failure keeps it.
    state.limits.failed_logins.hit(&email).await?;
    let logged_in = match state.app.commands.login(&body.email, &body.password, request_id, client_ip).await {
        Ok(logged_in) => logged_in,
        Err(e) => {
            if !matches!(e, DispatchError::Unauthenticated) {
                state.limits.failed_logins.forgive(&email).await;
            }
            return Err(e.into());
        }
    };
    state.limits.failed_logins.forgive(&email).await;
    let who = Identity {
        user_id: logged_in.user_id,
        account_id: logged_in.account_id,
        account_name: &logged_in.account_name,
        name: &logged_in.name,
        email: &logged_in.email,
        roles: &logged_in.roles,
        user_version: logged_in.user_version,
    };
    Ok(ok(tokens(&state, &who, &logged_in.session)?, Some(logged_in.session.cursor)))
}

#[derive(Deserialize, ToSchema)]
#[schema(as = Refresh)]
struct RefreshBody {
    refresh_token: String,
}

/// A new pair for the current refresh token; an already-rotated one revokes the whole session.
#[tracing::instrument(skip_all)]
async fn refresh(
    State(state): State<AppState>,
    Origin(request_id, client_ip): Origin,
    ApiJson { value: body, .. }: ApiJson<RefreshBody>,
) -> Result<Response, ApiError> {
    // A reused refresh token ends the session: its `SessionEnded`, like every event this node
    // commits, reaches the revocations before the answer.
    let refreshed = state.app.commands.refresh(&body.refresh_token, request_id, client_ip).await?;
    let who = Identity {
        user_id: refreshed.user_id,
        account_id: refreshed.account_id,
        account_name: &refreshed.account_name,
        name: &refreshed.name,
        email: &refreshed.email,
        roles: &refreshed.roles,
        user_version: refreshed.user_version,
    };
    Ok(ok(tokens(&state, &who, &refreshed.session)?, Some(refreshed.session.cursor)))
}

/// Ends the caller's session: its tokens are refused on this node before the answer, and on
/// every other node as soon as the log brings them the event.
#[tracing::instrument(skip_all)]
async fn logout(State(state): State<AppState>, principal: Principal) -> Result<Response, ApiError> {
    let session = principal.session()?.sid;
    let position = state.app.commands.end_session(&principal.ctx, session, "logout").await?;
    Ok(crate::http::respond::no_content(position))
}
