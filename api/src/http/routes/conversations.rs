//! `/api/v1/conversations` and memberships.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use parley_aggregates::conversation::{Conversation, ConversationEvent, MemberRole};
use parley_commands::Executed;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::consistency;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiPath, IdempotencyKeyHeader, MinPosition};
use crate::http::respond::{created_stored, envelope, idempotent, respond, scoped_key, with_etag, with_key};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default()
        .post("/conversations", create)
        .get("/conversations/{id}", show)
        .post("/conversations/{id}/memberships", add_member)
}

#[derive(Deserialize)]
struct CreateBody {
    kind: String,
    title: Option<String>,
    #[serde(default)]
    member_ids: Vec<Uuid>,
}

fn role_name(role: MemberRole) -> &'static str {
    match role {
        MemberRole::Admin => "admin",
        MemberRole::Member => "member",
    }
}

/// A just-started conversation, from the command's own outcome (no read model needed).
fn started(done: &Executed<Conversation>) -> Value {
    let at = done.appended.first().map(|a| a.recorded_at);
    let mut created_by = None;
    let mut members = Vec::new();
    for (event, appended) in done.events.iter().zip(&done.appended) {
        match event {
            ConversationEvent::ConversationStarted { created_by: by, .. } => created_by = Some(*by),
            ConversationEvent::MemberAdded { user_id, role, .. } => members.push(
                json!({"user_id": user_id, "role": role_name(*role), "joined_at": appended.recorded_at}),
            ),
            ConversationEvent::MessagePosted { .. } => {}
        }
    }
    let c = &done.aggregate;
    json!({
        "id": c.id, "kind": c.kind, "title": c.title, "topic": null, "created_by": created_by,
        "created_at": at, "archived": c.archived, "members": members, "version": 1,
    })
}

#[tracing::instrument(skip_all)]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson { value: body, raw }: ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    match body.kind.as_str() {
        "group" => {}
        "direct" => return Err(ApiError::invalid("kind", "direct conversations are not available yet")),
        _ => return Err(ApiError::invalid("kind", "must be \"group\" or \"direct\"")),
    }
    let title = body.title.unwrap_or_default();
    let key = key.map(|k| scoped_key(&principal, "POST", "/api/v1/conversations", &k, &raw));
    let render = |done: &Executed<Conversation>| created_stored(started(done), done.cursor);
    let idem = with_key(key.as_ref(), &render);
    let outcome =
        state.app.commands.start_group_with(&principal.ctx, &title, &body.member_ids, idem.as_ref()).await?;
    Ok(idempotent(outcome, &render))
}

type ConversationRow =
    (Uuid, String, Option<String>, Option<String>, Uuid, DateTime<Utc>, DateTime<Utc>, i64, bool, i64);

/// The conversation if it is of the caller's account, not archived, and the caller is a member.
pub async fn visible(pool: &PgPool, principal: &Principal, id: Uuid) -> Result<ConversationRow, ApiError> {
    let row: Option<ConversationRow> = sqlx::query_as(
        "SELECT c.id, c.kind, c.title, c.topic, c.created_by, c.created_at, c.last_activity_at, c.message_count, \
                c.archived, c.version \
         FROM conversations c \
         WHERE c.id = $1 AND c.account_id = $2 AND NOT c.archived \
           AND EXISTS (SELECT 1 FROM conversation_members m WHERE m.conversation_id = c.id AND m.user_id = $3)",
    )
    .bind(id)
    .bind(principal.account_id())
    .bind(principal.user_id()?)
    .fetch_optional(pool)
    .await?;
    row.ok_or_else(ApiError::not_found)
}

#[tracing::instrument(skip_all)]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    MinPosition(min): MinPosition,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    consistency::projections(&state, &["conversations"], min).await?;
    let pool = state.app.store.pool();
    let (id, kind, title, topic, created_by, created_at, last_activity_at, message_count, archived, version) =
        visible(pool, &principal, id).await?;
    let members: Vec<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT user_id, role, joined_at FROM conversation_members WHERE conversation_id = $1 ORDER BY joined_at, user_id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let members: Vec<Value> =
        members.into_iter().map(|(u, r, j)| json!({"user_id": u, "role": r, "joined_at": j})).collect();
    let data = json!({
        "id": id, "kind": kind, "title": title, "topic": topic, "created_by": created_by, "created_at": created_at,
        "last_activity_at": last_activity_at, "message_count": message_count, "archived": archived,
        "members": members, "version": version,
    });
    let response = respond(StatusCode::OK, envelope(data, json!({}), None), None);
    Ok(with_etag(response, version))
}

#[derive(Deserialize)]
struct MemberBody {
    user_id: Uuid,
    role: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn add_member(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson { value: body, raw }: ApiJson<MemberBody>,
) -> Result<Response, ApiError> {
    let role = match body.role.as_deref() {
        None | Some("member") => MemberRole::Member,
        Some("admin") => MemberRole::Admin,
        Some(_) => return Err(ApiError::invalid("role", "must be \"admin\" or \"member\"")),
    };
    let path = format!("/api/v1/conversations/{id}/memberships");
    let key = key.map(|k| scoped_key(&principal, "POST", &path, &k, &raw));
    let user_id = body.user_id;
    let render = move |done: &Executed<Conversation>| {
        let joined_at = done.appended.last().map(|a| a.recorded_at);
        let data = json!({"conversation_id": id, "user_id": user_id, "role": role_name(role), "joined_at": joined_at});
        created_stored(data, done.cursor)
    };
    let idem = with_key(key.as_ref(), &render);
    let outcome =
        state.app.commands.add_member_with(&principal.ctx, id, user_id, role, idem.as_ref()).await?;
    Ok(idempotent(outcome, &render))
}
