//! `/api/v1/roles`: the system roles and the account's custom roles.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use parley_aggregates::permissions::{system_role, ADMIN, MEMBER, OWNER};
use parley_aggregates::role::Role;
use parley_commands::Executed;
use parley_projections::read_models::roles::query::{self as roles, RoleView};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::door::{answer, Command};
use crate::http::error::{ApiError, Code};
use crate::http::extract::{ApiJson, ApiPath, IfMatch, Reading};
use crate::http::openapi::{Doc, Meta};
use crate::http::respond::{envelope, no_content, ok, respond, with_etag};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default()
        .get("/roles", list)
        .doc(
            Doc::new("The account's roles: the system ones, then custom ones by name")
                .lists::<RoleView>(Meta::Plain)
                .reads(),
        )
        .post("/roles", create)
        .doc(
            Doc::new("Create a custom role")
                .permission("roles.manage")
                .body::<CreateBody>()
                .answers::<RoleView>(201)
                .errors(&[Code::Conflict]),
        )
        .patch("/roles/{id}", update)
        .doc(
            Doc::new("Change a custom role (system roles are immutable: 403)")
                .permission("roles.manage")
                .body::<UpdateBody>()
                .answers::<RoleView>(200)
                .if_match()
                .errors(&[Code::Conflict]),
        )
        .delete("/roles/{id}", delete)
        .doc(
            Doc::new("Delete a custom role")
                .permission("roles.manage")
                .no_content()
                .errors(&[Code::Conflict]),
        )
}

/// The system roles, with fixed ids so that they can be named like any role (and refused).
pub const SYSTEM_ROLES: [(Uuid, &str); 3] = [
    (Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_0001), OWNER),
    (Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_0002), ADMIN),
    (Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_0003), MEMBER),
];

fn refuse_system(id: Uuid) -> Result<(), ApiError> {
    if SYSTEM_ROLES.iter().any(|(s, _)| *s == id) {
        return Err(ApiError::new(Code::Forbidden, "system roles cannot be changed"));
    }
    Ok(())
}

/// A custom role as its command left it: what the read model will show.
fn shown(role: &Executed<Role>) -> Value {
    let r = &role.aggregate;
    let Some(id) = r.id else { return Value::Null };
    json!(RoleView {
        id,
        name: r.name.clone(),
        permissions: r.permissions.iter().map(|p| p.name().to_owned()).collect(),
        system: false,
        version: role.version,
    })
}

/// Every role of the caller's account: the system roles first, then the custom ones by name.
#[tracing::instrument(skip_all)]
async fn list(principal: Principal, reads: Reading) -> Result<Response, ApiError> {
    let mut roles: Vec<RoleView> = SYSTEM_ROLES
        .iter()
        .map(|(id, name)| RoleView {
            id: *id,
            name: (*name).to_owned(),
            permissions: system_role(name).unwrap_or_default().iter().map(|p| p.name().to_owned()).collect(),
            system: true,
            version: 0,
        })
        .collect();
    roles.extend(roles::custom_roles(&reads.get(), principal.account_id()).await?);
    Ok(respond(StatusCode::OK, envelope(json!(roles), json!({}), None), None))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = NewRole)]
struct CreateBody {
    #[schema(min_length = 1, max_length = 200, example = "moderator")]
    name: String,
    #[schema(value_type = Vec<crate::http::openapi::shapes::PermissionName>)]
    permissions: Vec<String>,
}

#[tracing::instrument(skip_all)]
async fn create(
    State(state): State<AppState>,
    Command { principal, body, door, .. }: Command<CreateBody>,
) -> Result<Response, ApiError> {
    let render = |role: &Executed<Role>| answer(StatusCode::CREATED, shown(role), role.cursor);
    let idempotency = door.idempotency(&render);
    let outcome = state
        .app
        .commands
        .create_role(&principal.ctx, &body.name, &body.permissions, idempotency.as_ref())
        .await?;
    Ok(door.answer(outcome, &render))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = RoleChanges)]
struct UpdateBody {
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    #[schema(value_type = Option<Vec<crate::http::openapi::shapes::PermissionName>>)]
    permissions: Option<Vec<String>>,
}

#[tracing::instrument(skip_all)]
async fn update(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    IfMatch(expected): IfMatch,
    ApiJson { value: body, .. }: ApiJson<UpdateBody>,
) -> Result<Response, ApiError> {
    refuse_system(id)?;
    let role = state
        .app
        .commands
        .update_role(&principal.ctx, id, body.name.as_deref(), body.permissions.as_deref(), expected)
        .await?;
    Ok(with_etag(ok(shown(&role), role.cursor), role.version))
}

/// Deletes a custom role: its holders lose what it granted at once.
#[tracing::instrument(skip_all)]
async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    refuse_system(id)?;
    let role = state.app.commands.delete_role(&principal.ctx, id).await?;
    role.cursor.map(no_content).ok_or_else(|| ApiError::new(Code::NotFound, "role not found"))
}
