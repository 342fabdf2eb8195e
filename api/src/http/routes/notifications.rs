//! `/api/v1/notifications`: the caller's mentions and conversations they were added to.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use parley_aggregates::inbox::Inbox;
use parley_commands::{Executed, Idempotent};
use parley_projections::read_models::notifications::query;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::door::{self, BodilessCommand};
use crate::http::error::ApiError;
use crate::http::extract::PageParams;
use crate::http::openapi::{Doc, Meta};
use parley_projections::read_models::notifications::query::NotificationView;

/// `meta` of the list: pagination and the unread count.
fn unread_meta() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    let object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("pagination", utoipa::openapi::Ref::from_schema_name("Pagination"))
        .property("unread_count", ObjectBuilder::new().schema_type(Type::Integer))
        .required("pagination")
        .required("unread_count");
    utoipa::openapi::RefOr::T(Schema::Object(object.build()))
}
use crate::http::extract::{ApiPath, ApiQuery, Pagination, Reading};
use crate::http::respond::{self, envelope, respond};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default()
        .get("/notifications", list)
        .doc(
            Doc::new("Own notifications, newest first (mentions, added to a conversation, missed calls)")
                .query::<ListParams>()
                .query::<PageParams>()
                .lists::<NotificationView>(Meta::Fields(unread_meta()))
                .reads(),
        )
        .post("/notifications/{id}/read", read)
        .doc(Doc::new("Mark a notification read").no_content())
        .post("/notifications/read_all", read_all)
        .doc(Doc::new("Mark every notification read").no_content())
}

#[derive(Deserialize, utoipa::IntoParams)]
struct ListParams {
    /// Only unread ones.
    unread: Option<bool>,
}

/// Newest first; `?unread=true` for those not read yet. `meta.unread_count` counts them all.
#[tracing::instrument(skip_all)]
async fn list(
    principal: Principal,
    reads: Reading,
    page: Pagination,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let user_id = principal.user_id()?;
    let unread_only = params.unread.unwrap_or(false);
    let found = query::page(&reads.get(), user_id, unread_only, page.per_page, page.offset()).await?;
    let mut meta = page.meta(found.total);
    meta["unread_count"] = json!(found.unread);
    Ok(respond(StatusCode::OK, envelope(json!(found.items), meta, None), None))
}

/// 204: the notification is read (already, or now).
fn marked(done: &Executed<Inbox>) -> parley_eventstore::idempotency::StoredResponse {
    door::no_content(done.cursor.unwrap_or_default())
}

#[tracing::instrument(skip_all)]
async fn read(
    State(state): State<AppState>,
    reads: Reading,
    ApiPath(id): ApiPath<Uuid>,
    BodilessCommand { principal, door }: BodilessCommand,
) -> Result<Response, ApiError> {
    let user_id = principal.user_id()?;
    if let Some(replayed) = door.replayed(&state.app.store).await? {
        return Ok(replayed);
    }
    match query::is_read(&reads.get(), user_id, id).await? {
        None => Err(ApiError::not_found()),
        // Nothing to write: the position of the state shown.
        Some(true) => Ok(respond::no_content(state.app.store.head().await?)),
        Some(false) => {
            let idempotency = door.idempotency(&marked);
            let outcome =
                state.app.commands.mark_notification_read(&principal.ctx, id, idempotency.as_ref()).await?;
            Ok(door.answer(outcome, &marked))
        }
    }
}

#[tracing::instrument(skip_all)]
async fn read_all(
    State(state): State<AppState>,
    BodilessCommand { principal, door }: BodilessCommand,
) -> Result<Response, ApiError> {
    let idempotency = door.idempotency(&marked);
    let outcome: Idempotent<_> =
        state.app.commands.mark_all_notifications_read(&principal.ctx, idempotency.as_ref()).await?;
    Ok(door.answer(outcome, &marked))
}
