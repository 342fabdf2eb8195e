//! `/api/v1/webhooks`: outgoing subscriptions (Standard Webhooks deliveries of the account's
//! events), their attempts, resends and recoveries; incoming hooks and the signed endpoint they
//! post through. Secrets are in the answers that make them only (so those refuse an
//! Idempotency-Key, which would store them).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use parley_aggregates::permissions::Permission;
use parley_commands::webhooks::{Received, SubscriptionChanges};
use parley_eventstore::LogCursor;
use parley_projections::read_models::webhooks::query::{self as webhooks, HookView, SubscriptionView};
use parley_projections::Reads;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::door::{answer, Command};
use crate::http::error::{ApiError, Code};
use crate::http::openapi::shapes::{
    Accepted, IncomingText, IssuedHook, IssuedSubscription, RecoverQueued, ResendQueued,
};
use crate::http::openapi::Doc;
use parley_commands::webhooks::Attempt;

const MANAGE: &str = "webhooks.manage";
use crate::http::extract::{ApiJson, ApiPath, Pagination, Reading};
use crate::http::respond::{created, envelope, no_content, respond, with_etag};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default()
        .get("/webhooks/subscriptions", list)
        .doc(Doc::new("Outgoing webhook subscriptions (never their secrets)").permission(MANAGE).paged::<SubscriptionView>().reads())
        .post_secret("/webhooks/subscriptions", subscribe)
        .doc(
            Doc::new("Subscribe a URL to event types: the secret is shown once")
                .describe("URLs that resolve to private addresses are refused (422) unless the server allows them.")
                .permission(MANAGE)
                .body::<SubscribeBody>()
                .answers::<IssuedSubscription>(201)
                .etag(),
        )
        .get("/webhooks/subscriptions/{id}", show)
        .doc(Doc::new("A subscription").permission(MANAGE).answers::<SubscriptionView>(200).etag().reads())
        .patch("/webhooks/subscriptions/{id}", change)
        .doc(
            Doc::new("Change a subscription's URL, event types, description or `enabled`")
                .permission(MANAGE)
                .body::<ChangeBody>()
                .answers::<SubscriptionView>(200)
                .etag(),
        )
        .delete("/webhooks/subscriptions/{id}", unsubscribe)
        .doc(Doc::new("Remove a subscription").permission(MANAGE).no_content())
        .post_secret("/webhooks/subscriptions/{id}/rotate", rotate)
        .doc(
            Doc::new("Rotate the secret: shown once; both sign for 24 h")
                .permission(MANAGE)
                .answers::<IssuedSubscription>(200)
                .etag(),
        )
        .get("/webhooks/subscriptions/{id}/attempts", attempts)
        .doc(Doc::new("Delivery attempts, newest first").permission(MANAGE).paged::<Attempt>())
        .post("/webhooks/subscriptions/{id}/resend", resend)
        .doc(Doc::new("Deliver one event again").permission(MANAGE).body::<ResendBody>().answers::<ResendQueued>(202))
        .post("/webhooks/subscriptions/{id}/recover", recover)
        .doc(
            Doc::new("Deliver again every subscribed event of a time range")
                .permission(MANAGE)
                .body::<RecoverBody>()
                .answers::<RecoverQueued>(202),
        )
        .get("/webhooks/incoming", hooks)
        .doc(Doc::new("Incoming webhooks (never their secrets)").permission(MANAGE).paged::<HookView>().reads())
        .post_secret("/webhooks/incoming", create_hook)
        .doc(
            Doc::new("Create an incoming webhook posting into a conversation: the secret is shown once")
                .permission(MANAGE)
                .body::<HookBody>()
                .answers::<IssuedHook>(201)
                .errors(&[Code::NotFound])
                .etag(),
        )
        .get("/webhooks/incoming/{id}", hook)
        .doc(Doc::new("An incoming webhook").permission(MANAGE).answers::<HookView>(200).etag().reads())
        .delete("/webhooks/incoming/{id}", delete_hook)
        .doc(Doc::new("Delete an incoming webhook").permission(MANAGE).no_content())
        .post_signed("/webhooks/incoming/{id}", receive)
        .doc(
            Doc::new("Deliver to an incoming webhook, signed as Standard Webhooks sign")
                .describe(
                    "202 once the signature holds; a job posts `text` as the hook. A signed body that \
                     cannot be processed is still 202 and posts nothing; the same `webhook-id` twice posts once.",
                )
                .signed()
                .body::<IncomingText>()
                .answers::<Accepted>(202),
        )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = NewSubscription)]
struct SubscribeBody {
    url: String,
    event_types: Vec<String>,
    description: Option<String>,
}

/// The subscription as the read model has it once it includes `position`, with `secret` added
/// when given.
async fn shown(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    position: Option<LogCursor>,
) -> Result<SubscriptionView, ApiError> {
    let reads = Reads::new(state.app.store.pool(), position);
    webhooks::subscription(&reads, principal.account_id(), id).await?.ok_or_else(ApiError::not_found)
}

/// 201 with the secret, shown only here.
#[tracing::instrument(skip_all)]
async fn subscribe(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson { value: body, .. }: ApiJson<SubscribeBody>,
) -> Result<Response, ApiError> {
    let issued =
        state.app.webhooks.subscribe(&principal.ctx, &body.url, &body.event_types, body.description).await?;
    let done = &issued.done;
    let id = done.aggregate.id.ok_or_else(ApiError::not_found)?;
    let view = shown(&state, &principal, id, done.cursor).await?;
    let mut data = json!(view);
    data["secret"] = json!(issued.secret);
    Ok(with_etag(created(data, done.cursor), done.version))
}

#[tracing::instrument(skip_all)]
async fn list(principal: Principal, reads: Reading, page: Pagination) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::WebhooksManage)?;
    let (items, total) =
        webhooks::subscriptions(&reads.get(), principal.account_id(), page.per_page, page.offset()).await?;
    Ok(respond(StatusCode::OK, envelope(json!(items), page.meta(total), None), None))
}

#[tracing::instrument(skip_all)]
async fn show(
    principal: Principal,
    reads: Reading,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::WebhooksManage)?;
    let view = webhooks::subscription(&reads.get(), principal.account_id(), id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let version = view.version;
    Ok(with_etag(respond(StatusCode::OK, envelope(json!(view), json!({}), None), None), version))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = SubscriptionChanges)]
struct ChangeBody {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    description: Option<String>,
    enabled: Option<bool>,
}

/// Changes what is given; 200 with the subscription as it now is.
#[tracing::instrument(skip_all)]
async fn change(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    Command { principal, body, .. }: Command<ChangeBody>,
) -> Result<Response, ApiError> {
    let ChangeBody { url, event_types, description, enabled } = body;
    let changes = SubscriptionChanges { url, event_types, description, enabled };
    let done = state.app.webhooks.change_subscription(&principal.ctx, id, changes).await?;
    let position = match done.as_ref().and_then(|d| d.cursor) {
        Some(position) => position,
        None => state.app.store.head().await?,
    };
    let view = shown(&state, &principal, id, Some(position)).await?;
    let version = view.version;
    Ok(with_etag(
        respond(StatusCode::OK, envelope(json!(view), json!({}), Some(position)), Some(position)),
        version,
    ))
}

#[tracing::instrument(skip_all)]
async fn unsubscribe(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let done = state.app.webhooks.unsubscribe(&principal.ctx, id).await?;
    done.cursor.map(no_content).ok_or_else(ApiError::not_found)
}

/// 200 with the new secret, shown only here; the previous one signs for 24 more hours.
#[tracing::instrument(skip_all)]
async fn rotate(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let issued = state.app.webhooks.rotate(&principal.ctx, id).await?;
    let view = shown(&state, &principal, id, issued.done.cursor).await?;
    let mut data = json!(view);
    data["secret"] = json!(issued.secret);
    let position = issued.done.cursor;
    Ok(with_etag(respond(StatusCode::OK, envelope(data, json!({}), position), position), issued.done.version))
}

#[tracing::instrument(skip_all)]
async fn attempts(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    page: Pagination,
) -> Result<Response, ApiError> {
    let (items, total) =
        state.app.webhooks.attempts(&principal.ctx, id, page.per_page, page.offset()).await?;
    Ok(respond(StatusCode::OK, envelope(json!(items), page.meta(total), None), None))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = Resend)]
struct ResendBody {
    event_id: Uuid,
}

/// 202: the event is delivered again (a new delivery, with the same `webhook-id`).
#[tracing::instrument(skip_all)]
async fn resend(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    Command { principal, body, door, .. }: Command<ResendBody>,
) -> Result<Response, ApiError> {
    let render = |_: &()| {
        answer(StatusCode::ACCEPTED, json!({"subscription_id": id, "event_id": body.event_id}), None)
    };
    let (webhooks, ctx) = (state.app.webhooks.clone(), principal.ctx.clone());
    let answered = door
        .operate(state.app.store.pool(), &render, |conn| {
            Box::pin(async move { Ok(webhooks.resend(conn, &ctx, id, body.event_id).await?) })
        })
        .await?;
    state.app.jobs.wake().await;
    Ok(answered)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = Recover)]
struct RecoverBody {
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
}

/// 202: every event of the subscription's types in the range is delivered again.
#[tracing::instrument(skip_all)]
async fn recover(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    Command { principal, body, door, .. }: Command<RecoverBody>,
) -> Result<Response, ApiError> {
    let render =
        |n: &u64| answer(StatusCode::ACCEPTED, json!({"subscription_id": id, "deliveries": n}), None);
    let (webhooks, ctx) = (state.app.webhooks.clone(), principal.ctx.clone());
    let answered = door
        .operate(state.app.store.pool(), &render, |conn| {
            Box::pin(async move { Ok(webhooks.recover(conn, &ctx, id, body.since, body.until).await?) })
        })
        .await?;
    state.app.jobs.wake().await;
    Ok(answered)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = NewIncomingWebhook)]
struct HookBody {
    conversation_id: Uuid,
    name: String,
}

/// 201 `{id, ..., secret}`: the secret shown only here.
#[tracing::instrument(skip_all)]
async fn create_hook(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson { value: body, .. }: ApiJson<HookBody>,
) -> Result<Response, ApiError> {
    let issued = state.app.webhooks.create_hook(&principal.ctx, body.conversation_id, &body.name).await?;
    let done = &issued.done;
    let created_at = done.appended.first().map(|a| a.recorded_at);
    let (Some(id), Some(created_by), Some(created_at)) =
        (done.aggregate.id, principal.ctx.actor.id, created_at)
    else {
        return Err(ApiError::not_found());
    };
    let mut data = json!(HookView {
        id,
        conversation_id: body.conversation_id,
        name: done.aggregate.name.clone(),
        created_by,
        created_at,
        version: done.version,
    });
    data["secret"] = json!(issued.secret);
    Ok(with_etag(created(data, done.cursor), done.version))
}

#[tracing::instrument(skip_all)]
async fn hooks(principal: Principal, reads: Reading, page: Pagination) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::WebhooksManage)?;
    let (items, total) =
        webhooks::hooks(&reads.get(), principal.account_id(), page.per_page, page.offset()).await?;
    Ok(respond(StatusCode::OK, envelope(json!(items), page.meta(total), None), None))
}

#[tracing::instrument(skip_all)]
async fn hook(
    principal: Principal,
    reads: Reading,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::WebhooksManage)?;
    let view =
        webhooks::hook(&reads.get(), principal.account_id(), id).await?.ok_or_else(ApiError::not_found)?;
    let version = view.version;
    Ok(with_etag(respond(StatusCode::OK, envelope(json!(view), json!({}), None), None), version))
}

#[tracing::instrument(skip_all)]
async fn delete_hook(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let done = state.app.webhooks.delete_hook(&principal.ctx, id).await?;
    done.cursor.map(no_content).ok_or_else(ApiError::not_found)
}

/// A signed request of an integration: 202 once verified (its message is posted by a job), 401
/// when the signature or timestamp does not verify, 404 for an unknown hook. Never a 500 for
/// what a sender can send: a body that cannot be processed is accepted and posts nothing.
#[tracing::instrument(skip_all, fields(hook_id = %id))]
async fn receive(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let received = state
        .app
        .webhooks
        .receive(id, header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"), &body)
        .await?;
    match received {
        Received::Accepted => {
            Ok(respond(StatusCode::ACCEPTED, envelope(json!({"accepted": true}), json!({}), None), None))
        }
        Received::UnknownHook => Err(ApiError::not_found()),
        Received::Refused(why) => Err(ApiError::new(Code::Unauthorized, why.to_string())),
    }
}
