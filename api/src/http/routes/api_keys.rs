//! `/api/v1/api_keys`: credentials for programs. The secret is in the creation's answer only
//! (so an Idempotency-Key, which would store it, is refused); lists show its visible prefix.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use parley_aggregates::permissions::Permission;
use parley_projections::read_models::api_keys::query::{self as api_keys, ApiKeyView};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiPath, Pagination, Reading};
use crate::http::openapi::shapes::IssuedApiKey;
use crate::http::openapi::Doc;
use crate::http::respond::{created, envelope, no_content, respond, with_etag};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default()
        .get("/api_keys", list)
        .doc(
            Doc::new("The account's API keys (never their secrets)")
                .permission("api_keys.manage")
                .paged::<ApiKeyView>()
                .reads(),
        )
        .post_secret("/api_keys", create)
        .doc(
            Doc::new("Issue an API key with some permissions: the secret is shown once")
                .describe("A key may hold only permissions its creator holds.")
                .permission("api_keys.manage")
                .body::<CreateBody>()
                .answers::<IssuedApiKey>(201)
                .etag(),
        )
        .delete("/api_keys/{id}", revoke)
        .doc(Doc::new("Revoke an API key").permission("api_keys.manage").no_content())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = NewApiKey)]
struct CreateBody {
    #[schema(min_length = 1, max_length = 200, example = "ci")]
    name: String,
    /// Only permissions the creator holds.
    #[schema(value_type = Vec<crate::http::openapi::shapes::PermissionName>)]
    permissions: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
}

/// 201 with the secret, shown only here.
#[tracing::instrument(skip_all)]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson { value: body, .. }: ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let issued = state
        .app
        .commands
        .create_api_key(&principal.ctx, &body.name, &body.permissions, body.expires_at)
        .await?;
    let key = &issued.key.aggregate;
    let created_at = issued.key.appended.first().map(|a| a.recorded_at);
    let (Some(id), Some(created_by), Some(created_at)) = (key.id, principal.ctx.actor.id, created_at) else {
        return Err(ApiError::not_found());
    };
    // The key as lists will show it, and its secret: the only time it is shown.
    let mut shown = json!(ApiKeyView {
        id,
        name: key.name.clone(),
        prefix: key.prefix.clone(),
        permissions: key.permissions.iter().map(|p| p.name().to_owned()).collect(),
        created_by,
        created_at,
        expires_at: key.expires_at,
        revoked_at: None,
        last_used_at: None,
        status: api_keys::status(None, key.expires_at, created_at),
        version: issued.key.version,
    });
    shown["secret"] = json!(issued.secret);
    Ok(with_etag(created(shown, issued.key.cursor), issued.key.version))
}

/// The account's keys, newest first, revoked and expired ones included (with their status).
#[tracing::instrument(skip_all)]
async fn list(principal: Principal, reads: Reading, page: Pagination) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::ApiKeysManage)?;
    let (items, total) =
        api_keys::list(&reads.get(), principal.account_id(), page.per_page, page.offset()).await?;
    Ok(respond(StatusCode::OK, envelope(json!(items), page.meta(total), None), None))
}

/// Revokes a key: it authenticates nothing from here on, on this node before the answer and on
/// every other node as soon as the log brings them the event. Revoking it again changes nothing.
#[tracing::instrument(skip_all)]
async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let done = state.app.commands.revoke_api_key(&principal.ctx, id).await?;
    done.cursor.map(no_content).ok_or_else(ApiError::not_found)
}
