//! `/api/v1/invitations`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use parley_aggregates::permissions::Permission;
use parley_projections::read_models::invitations::query as invitations;
use serde::Deserialize;
use serde_json::json;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::error::{ApiError, Code};
use crate::http::extract::{ApiJson, ApiPath, Pagination, Reading};
use crate::http::openapi::shapes::IssuedInvitation;
use crate::http::openapi::Doc;
use crate::http::respond::{created, envelope, no_content, respond};
use crate::http::state::AppState;
use parley_aggregates::invitation::InvitationError;
use parley_aggregates::DomainError;
use parley_commands::DispatchError;
use parley_projections::read_models::invitations::query::InvitationView;

pub fn router() -> Routes {
    Routes::default()
        .post_secret("/invitations", create)
        .doc(
            Doc::new("Invite someone by email with a role: the token is shown only here (valid 7 days)")
                .permission("users.invite")
                .body::<CreateBody>()
                .answers::<IssuedInvitation>(201)
                .errors(&[Code::Conflict]),
        )
        .get("/invitations", list)
        .doc(
            Doc::new("The account's invitations, newest first")
                .permission("users.invite")
                .paged::<InvitationView>()
                .reads(),
        )
        .delete("/invitations/{id}", revoke)
        .doc(
            Doc::new("Revoke an invitation")
                .permission("users.invite")
                .no_content()
                .errors(&[Code::InvitationInvalid]),
        )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = NewInvitation)]
struct CreateBody {
    #[schema(format = Email, example = "bob@example.com")]
    email: String,
    /// A system role (`admin`, `member`; `owner` only from an owner) or a custom role's name.
    #[schema(example = "member")]
    role: String,
}

/// 201 with the token: the only time it is shown (so an Idempotency-Key, which would store it,
/// is refused).
#[tracing::instrument(skip_all)]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson { value: body, .. }: ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let issued = state.app.commands.invite(&principal.ctx, &body.email, &body.role).await?;
    Ok(created(
        json!({
            "id": issued.invitation_id, "email": issued.email, "role": issued.role,
            "token": issued.token, "expires_at": issued.expires_at,
        }),
        Some(issued.cursor),
    ))
}

/// The account's invitations, newest first (never their tokens).
#[tracing::instrument(skip_all)]
async fn list(principal: Principal, reads: Reading, page: Pagination) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::UsersInvite)?;
    let (items, total) =
        invitations::list(&reads.get(), principal.account_id(), page.per_page, page.offset()).await?;
    Ok(respond(StatusCode::OK, envelope(json!(items), page.meta(total), None), None))
}

/// Revokes a pending invitation: its token no longer registers anyone.
#[tracing::instrument(skip_all)]
async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<uuid::Uuid>,
) -> Result<Response, ApiError> {
    // An invitation that does not exist is a resource that is not there (404), not a token
    // that cannot be used (422, as registering with it says).
    let cursor = state.app.commands.revoke_invitation(&principal.ctx, id).await.map_err(|e| match e {
        DispatchError::Domain(DomainError::Invitation(InvitationError::NotFound)) => ApiError::not_found(),
        e => e.into(),
    })?;
    Ok(no_content(cursor))
}
