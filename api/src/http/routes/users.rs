//! `/api/v1/users`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use parley_aggregates::permissions::Permission;
use parley_projections::read_models::users::query::{self as users, PublicProfile, UserSummary};
use parley_projections::Reads;
use serde_json::json;
use uuid::Uuid;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::consistency::later;
use crate::http::error::{ApiError, Code};
use crate::http::extract::{ApiPath, ApiQuery, MinPosition, Pagination, Reading};
use crate::http::openapi::shapes::{AssignedRoles, Me, PermissionInfo, ProfileChanges, UpdatedProfile};
use crate::http::openapi::{Doc, Meta};
use crate::http::respond::{envelope, ok, respond, with_etag};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default()
        .get("/users", list)
        .doc(
            Doc::new("The account's users, by name; `search` matches a name or email prefix")
                .permission("users.view")
                .query::<ListQuery>()
                .paged::<UserSummary>()
                .reads(),
        )
        .get("/users/me", me)
        .doc(
            Doc::new("Own profile with email, roles, permissions and account")
                .answers::<Me>(200)
                .etag()
                .reads(),
        )
        .get("/users/{id}", profile)
        .doc(
            Doc::new("A user's public profile (no email)")
                .permission("users.view")
                .answers::<PublicProfile>(200)
                .etag()
                .reads(),
        )
        .patch("/users/{id}", update)
        .doc(
            Doc::new("Change a profile: one's own, or with `users.manage`")
                .body::<ProfileChanges>()
                .answers::<UpdatedProfile>(200)
                .if_match()
                .errors(&[Code::Forbidden]),
        )
        .delete("/users/{id}", deactivate)
        .doc(
            Doc::new("Deactivate a user: their sessions end, login is refused")
                .permission("users.manage")
                .no_content()
                .errors(&[Code::Conflict]),
        )
        .put("/users/{id}/roles", assign_roles)
        .doc(
            Doc::new("Replace a user's roles (the last owner cannot be demoted)")
                .permission("users.manage")
                .body::<RolesBody>()
                .answers::<AssignedRoles>(200)
                .errors(&[Code::Conflict]),
        )
        .put("/users/{id}/password", change_password)
        .doc(
            Doc::new("Change one's own password (not one of the last 5)")
                .body::<PasswordBody>()
                .no_content()
                .errors(&[Code::Forbidden]),
        )
        .get("/permissions", permissions)
        .doc(Doc::new("The permission registry").lists::<PermissionInfo>(Meta::Plain))
}

/// Own profile with email, roles, permissions and account. Waits for the read model to include
/// the caller's session (and `X-Min-Position`), so it answers right after registering.
#[tracing::instrument(skip_all)]
async fn me(
    State(state): State<AppState>,
    principal: Principal,
    MinPosition(min): MinPosition,
) -> Result<Response, ApiError> {
    let session = principal.session()?;
    let reads = Reads::new(state.app.store.pool(), later(min, session.pos.parse().ok()));
    let profile = users::own_profile(&reads, principal.account_id(), session.sub)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let permissions = state.live.roles.permissions(principal.account_id(), &profile.roles);
    let permissions: Vec<&str> = permissions.into_iter().map(|p| p.name()).collect();
    let version = profile.version;
    let mut data = json!(profile);
    data["permissions"] = json!(permissions);
    Ok(with_etag(ok(data, None), version))
}

/// The permission registry.
async fn permissions(_: Principal) -> Response {
    let registry: Vec<_> = parley_aggregates::permissions::REGISTRY
        .iter()
        .map(|(_, name, description)| json!({"name": name, "description": description}))
        .collect();
    ok(json!(registry), None)
}

/// Deactivates a user: their sessions end (tokens refused here before the answer, on other
/// nodes as the log reaches them), login is refused.
#[tracing::instrument(skip_all)]
async fn deactivate(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let done = state.app.commands.deactivate_user(&principal.ctx, id).await?;
    Ok(crate::http::respond::no_content(done.cursor))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[schema(as = RoleAssignment)]
struct RolesBody {
    roles: Vec<String>,
}

/// Replaces a user's roles; their older tokens are refused from now on (they refresh).
#[tracing::instrument(skip_all)]
async fn assign_roles(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    crate::http::extract::ApiJson { value: body, .. }: crate::http::extract::ApiJson<RolesBody>,
) -> Result<Response, ApiError> {
    let assigned = state.app.commands.assign_roles(&principal.ctx, id, body.roles).await?;
    Ok(ok(json!({"id": id, "roles": assigned.roles}), assigned.cursor))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
struct ListQuery {
    /// A prefix of the name or email.
    search: Option<String>,
}

/// The account's users, by name, with page pagination; `search` matches a name or email prefix.
#[tracing::instrument(skip_all)]
async fn list(
    principal: Principal,
    reads: Reading,
    ApiQuery(q): ApiQuery<ListQuery>,
    page: Pagination,
) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::UsersView)?;
    let (items, total) =
        users::list(&reads.get(), principal.account_id(), q.search.as_deref(), page.per_page, page.offset())
            .await?;
    Ok(respond(StatusCode::OK, envelope(json!(items), page.meta(total), None), None))
}

/// A user's public profile (no email), in the caller's account only.
#[tracing::instrument(skip_all)]
async fn profile(
    principal: Principal,
    reads: Reading,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::UsersView)?;
    let profile = users::public_profile(&reads.get(), principal.account_id(), id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let version = profile.version;
    Ok(with_etag(ok(json!(profile), None), version))
}

/// Changes a profile (one's own, or with `users.manage`); `If-Match` guards against lost updates.
#[tracing::instrument(skip_all)]
async fn update(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    crate::http::extract::IfMatch(expected): crate::http::extract::IfMatch,
    crate::http::extract::ApiJson { raw, .. }: crate::http::extract::ApiJson<
        serde_json::Map<String, serde_json::Value>,
    >,
) -> Result<Response, ApiError> {
    let name = match crate::http::extract::nullable_field(&raw, "name")? {
        Some(Some(n)) => Some(n),
        Some(None) => return Err(ApiError::invalid("name", "cannot be cleared")),
        None => None,
    };
    let changes = parley_commands::services::ProfileChanges {
        name,
        display_name: crate::http::extract::nullable_field(&raw, "display_name")?,
        avatar_url: crate::http::extract::nullable_field(&raw, "avatar_url")?,
        bio: crate::http::extract::nullable_field(&raw, "bio")?,
    };
    let updated = state.app.commands.update_profile(&principal.ctx, id, changes, expected).await?;
    let u = &updated.user;
    let response = ok(
        json!({"id": id, "name": u.name, "display_name": u.display_name, "avatar_url": u.avatar_url, "bio": u.bio,
               "version": updated.version}),
        updated.cursor,
    );
    Ok(with_etag(response, updated.version))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[schema(as = PasswordChange)]
struct PasswordBody {
    current_password: String,
    new_password: String,
}

/// Changes one's own password.
#[tracing::instrument(skip_all)]
async fn change_password(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    crate::http::extract::ApiJson { value: body, .. }: crate::http::extract::ApiJson<PasswordBody>,
) -> Result<Response, ApiError> {
    let cursor = state
        .app
        .commands
        .change_password(&principal.ctx, id, &body.current_password, &body.new_password)
        .await?;
    Ok(crate::http::respond::no_content(cursor))
}
