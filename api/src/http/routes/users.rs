//! `/api/v1/users`.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::consistency::{self, later};
use crate::http::error::ApiError;
use crate::http::extract::MinPosition;
use crate::http::respond::{ok, with_etag};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default()
        .get("/users", list)
        .get("/users/me", me)
        .get("/users/{id}", profile)
        .patch("/users/{id}", update)
        .delete("/users/{id}", deactivate)
        .put("/users/{id}/roles", assign_roles)
        .put("/users/{id}/password", change_password)
        .get("/permissions", permissions)
}

type UserRow = (
    Uuid,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Vec<String>,
    DateTime<Utc>,
    i64,
    Uuid,
    String,
);

/// Own profile with email, roles, permissions and account. Waits for the read model to include
/// the caller's session (and `X-Min-Position`), so it answers right after registering.
#[tracing::instrument(skip_all)]
async fn me(
    State(state): State<AppState>,
    principal: Principal,
    MinPosition(min): MinPosition,
) -> Result<Response, ApiError> {
    let session = principal.session()?;
    consistency::projections(&state, &["users"], later(min, session.pos.parse().ok())).await?;
    let row: Option<UserRow> = sqlx::query_as(
        "SELECT u.id, u.name, u.email, u.display_name, u.avatar_url, u.bio, u.roles, u.created_at, u.version, \
                a.id, a.name \
         FROM users u JOIN accounts a ON a.id = u.account_id \
         WHERE u.id = $1 AND u.account_id = $2 AND u.active",
    )
    .bind(session.sub)
    .bind(principal.account_id())
    .fetch_optional(state.app.store.pool())
    .await?;
    let (
        id,
        name,
        email,
        display_name,
        avatar_url,
        bio,
        roles,
        created_at,
        version,
        account_id,
        account_name,
    ) = row.ok_or_else(ApiError::not_found)?;
    let permissions = state.roles.permissions(principal.account_id(), &roles);
    let permissions: Vec<&str> = permissions.into_iter().map(|p| p.name()).collect();
    let response = ok(
        json!({
            "id": id, "name": name, "email": email, "display_name": display_name, "avatar_url": avatar_url,
            "bio": bio, "roles": roles, "permissions": permissions, "created_at": created_at, "version": version,
            "account": {"id": account_id, "name": account_name},
        }),
        None,
    );
    Ok(with_etag(response, version))
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
    crate::http::extract::ApiPath(id): crate::http::extract::ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let done = state.app.commands.deactivate_user(&principal.ctx, id).await?;
    for session in &done.ended_sessions {
        state.revocations.revoke(*session);
    }
    Ok(crate::http::respond::no_content(done.cursor))
}

#[derive(serde::Deserialize)]
struct RolesBody {
    roles: Vec<String>,
}

/// Replaces a user's roles; their older tokens are refused from now on (they refresh).
#[tracing::instrument(skip_all)]
async fn assign_roles(
    State(state): State<AppState>,
    principal: Principal,
    crate::http::extract::ApiPath(id): crate::http::extract::ApiPath<Uuid>,
    crate::http::extract::ApiJson { value: body, .. }: crate::http::extract::ApiJson<RolesBody>,
) -> Result<Response, ApiError> {
    let assigned = state.app.commands.assign_roles(&principal.ctx, id, body.roles).await?;
    state.revocations.change_roles(id, assigned.user_version);
    Ok(ok(json!({"id": id, "roles": assigned.roles}), assigned.cursor))
}

#[derive(serde::Deserialize)]
struct ListQuery {
    search: Option<String>,
}

/// `search` as a LIKE prefix, its wildcards taken literally.
fn prefix_pattern(search: &str) -> String {
    let escaped = search.trim().to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("{escaped}%")
}

/// The account's users, by name, with page pagination; `search` matches a name or email prefix.
#[tracing::instrument(skip_all)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    MinPosition(min): MinPosition,
    crate::http::extract::ApiQuery(q): crate::http::extract::ApiQuery<ListQuery>,
    page: crate::http::extract::Pagination,
) -> Result<Response, ApiError> {
    principal.ctx.require(parley_aggregates::permissions::Permission::UsersView)?;
    consistency::projections(&state, &["users"], min).await?;
    let pattern = q.search.as_deref().filter(|s| !s.trim().is_empty()).map(prefix_pattern);
    let pool = state.app.store.pool();
    let (total,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM users WHERE account_id = $1 \
           AND ($2::text IS NULL OR lower(name) LIKE $2 OR email LIKE $2)",
    )
    .bind(principal.account_id())
    .bind(&pattern)
    .fetch_one(pool)
    .await?;
    type Row = (Uuid, String, String, Option<String>, Option<String>, Vec<String>, bool, DateTime<Utc>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, name, email, display_name, avatar_url, roles, active, created_at FROM users \
         WHERE account_id = $1 AND ($2::text IS NULL OR lower(name) LIKE $2 OR email LIKE $2) \
         ORDER BY lower(name), id LIMIT $3 OFFSET $4",
    )
    .bind(principal.account_id())
    .bind(&pattern)
    .bind(page.per_page)
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    let users: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|(id, name, email, display_name, avatar_url, roles, active, created_at)| {
            json!({"id": id, "name": name, "email": email, "display_name": display_name, "avatar_url": avatar_url,
                   "roles": roles, "active": active, "created_at": created_at})
        })
        .collect();
    Ok(crate::http::respond::respond(
        axum::http::StatusCode::OK,
        crate::http::respond::envelope(json!(users), page.meta(total), None),
        None,
    ))
}

/// A user's public profile (no email), in the caller's account only.
#[tracing::instrument(skip_all)]
async fn profile(
    State(state): State<AppState>,
    principal: Principal,
    MinPosition(min): MinPosition,
    crate::http::extract::ApiPath(id): crate::http::extract::ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    principal.ctx.require(parley_aggregates::permissions::Permission::UsersView)?;
    consistency::projections(&state, &["users"], min).await?;
    type Row = (Uuid, String, Option<String>, Option<String>, Option<String>, bool, i64);
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, name, display_name, avatar_url, bio, active, version FROM users WHERE id = $1 AND account_id = $2",
    )
    .bind(id)
    .bind(principal.account_id())
    .fetch_optional(state.app.store.pool())
    .await?;
    let (id, name, display_name, avatar_url, bio, active, version) = row.ok_or_else(ApiError::not_found)?;
    let response = ok(
        json!({"id": id, "name": name, "display_name": display_name, "avatar_url": avatar_url, "bio": bio,
               "active": active, "version": version}),
        None,
    );
    Ok(with_etag(response, version))
}

/// Changes a profile (one's own, or with `users.manage`); `If-Match` guards against lost updates.
#[tracing::instrument(skip_all)]
async fn update(
    State(state): State<AppState>,
    principal: Principal,
    crate::http::extract::ApiPath(id): crate::http::extract::ApiPath<Uuid>,
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

#[derive(serde::Deserialize)]
struct PasswordBody {
    current_password: String,
    new_password: String,
}

/// Changes one's own password.
#[tracing::instrument(skip_all)]
async fn change_password(
    State(state): State<AppState>,
    principal: Principal,
    crate::http::extract::ApiPath(id): crate::http::extract::ApiPath<Uuid>,
    crate::http::extract::ApiJson { value: body, .. }: crate::http::extract::ApiJson<PasswordBody>,
) -> Result<Response, ApiError> {
    let cursor = state
        .app
        .commands
        .change_password(&principal.ctx, id, &body.current_password, &body.new_password)
        .await?;
    Ok(crate::http::respond::no_content(cursor))
}
