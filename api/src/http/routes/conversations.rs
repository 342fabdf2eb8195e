//! `/api/v1/conversations` and memberships.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use parley_aggregates::conversation::{Conversation, ConversationEvent, MemberRole};
use parley_commands::services::DirectStarted;
use parley_commands::{Executed, Idempotent};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::consistency;
use crate::http::error::ApiError;
use crate::http::extract::{
    nullable_field, ApiJson, ApiPath, ApiQuery, IdempotencyKeyHeader, MinPosition, Pagination,
};
use crate::http::respond::{
    created_stored, envelope, idempotent, no_content, ok, respond, scoped_key, with_etag, with_key,
};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default()
        .get("/conversations", list)
        .post("/conversations", create)
        .get("/conversations/{id}", show)
        .patch("/conversations/{id}", update)
        .delete("/conversations/{id}", archive)
        .post("/conversations/{id}/memberships", add_member)
        .delete("/conversations/{id}/memberships/{user_id}", remove_member)
        .post("/conversations/{id}/read", read)
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
fn started_json(done: &Executed<Conversation>) -> Value {
    let at = done.appended.first().map(|a| a.recorded_at);
    let mut created_by = None;
    let mut members = Vec::new();
    for (event, appended) in done.events.iter().zip(&done.appended) {
        match event {
            ConversationEvent::ConversationStarted { created_by: by, .. } => created_by = Some(*by),
            ConversationEvent::MemberAdded { user_id, role, .. } => members.push(
                json!({"user_id": user_id, "role": role_name(*role), "joined_at": appended.recorded_at}),
            ),
            _ => {}
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
        "direct" => return create_direct(state, principal, key, body, raw).await,
        _ => return Err(ApiError::invalid("kind", "must be \"group\" or \"direct\"")),
    }
    let title = body.title.unwrap_or_default();
    let key = key.map(|k| scoped_key(&principal, "POST", "/api/v1/conversations", &k, &raw));
    let render = |done: &Executed<Conversation>| created_stored(started_json(done), done.cursor);
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

/// 201 with a new direct conversation, or 200 with the one the pair already has.
async fn create_direct(
    state: AppState,
    principal: Principal,
    key: Option<String>,
    body: CreateBody,
    raw: Value,
) -> Result<Response, ApiError> {
    let [other] = body.member_ids[..] else {
        return Err(ApiError::invalid("member_ids", "a direct conversation takes exactly one other member"));
    };
    let key = key.map(|k| scoped_key(&principal, "POST", "/api/v1/conversations", &k, &raw));
    let render = |done: &Executed<Conversation>| created_stored(started_json(done), done.cursor);
    let idem = with_key(key.as_ref(), &render);
    match state.app.commands.start_direct_with(&principal.ctx, other, idem.as_ref()).await? {
        Idempotent::Fresh(DirectStarted::Created(done)) => Ok(idempotent(Idempotent::Fresh(*done), &render)),
        Idempotent::Replayed(stored) => Ok(idempotent(Idempotent::Replayed(stored), &render)),
        Idempotent::Fresh(DirectStarted::Existing(id)) => {
            // The pair's conversation as the read model has it, once it includes the stream.
            let stream = parley_eventstore::StreamKey::new(Conversation::TYPE, id.to_string());
            let head = state.app.store.stream_head(&stream).await.map_err(|e| ApiError::internal(&e))?;
            let head = head.ok_or_else(ApiError::not_found)?;
            consistency::projections(&state, &["conversations"], Some(head)).await?;
            let (data, version) = conversation_json(state.app.store.pool(), &principal, id).await?;
            Ok(with_etag(respond(StatusCode::OK, envelope(data, json!({}), Some(head)), Some(head)), version))
        }
    }
}

#[derive(Deserialize)]
struct ListParams {
    #[serde(default)]
    kind: Option<String>,
}

type ListRow = (
    (Uuid, String, Option<String>, Option<String>, Uuid, DateTime<Utc>, DateTime<Utc>, i64, i64),
    (i64, Option<Uuid>, Option<Uuid>, Option<String>, Option<DateTime<Utc>>, Option<bool>, Option<i64>),
);

/// The caller's conversations, most recent activity first, each with its unread count and last
/// message.
#[tracing::instrument(skip_all)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    MinPosition(min): MinPosition,
    page: Pagination,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let user_id = principal.user_id()?;
    consistency::projections(&state, &["conversations", "messages"], min).await?;
    let pool = state.app.store.pool();
    let kind = params.kind.filter(|k| !k.is_empty());
    let (total,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM conversation_members cm JOIN conversations c ON c.id = cm.conversation_id \
         WHERE cm.user_id = $1 AND cm.account_id = $2 AND NOT c.archived AND ($3::text IS NULL OR c.kind = $3)",
    )
    .bind(user_id)
    .bind(principal.account_id())
    .bind(&kind)
    .fetch_one(pool)
    .await?;
    let rows: Vec<sqlx::postgres::PgRow> = sqlx::query(
        "SELECT c.id, c.kind, c.title, c.topic, c.created_by, c.created_at, c.last_activity_at, c.message_count, \
                c.version, coalesce(r.unread_count, 0) AS unread_count, \
                m.id AS m_id, m.author_id, m.body, m.created_at AS m_created_at, m.deleted, m.seq \
         FROM conversation_members cm \
         JOIN conversations c ON c.id = cm.conversation_id AND NOT c.archived \
         LEFT JOIN read_states r ON r.conversation_id = c.id AND r.user_id = cm.user_id \
         LEFT JOIN LATERAL (SELECT id, author_id, body, created_at, deleted, seq FROM messages \
                            WHERE conversation_id = c.id ORDER BY seq DESC LIMIT 1) m ON true \
         WHERE cm.user_id = $1 AND cm.account_id = $2 AND ($3::text IS NULL OR c.kind = $3) \
         ORDER BY c.last_activity_at DESC, c.id LIMIT $4 OFFSET $5",
    )
    .bind(user_id)
    .bind(principal.account_id())
    .bind(&kind)
    .bind(page.per_page)
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let (
            (id, kind, title, topic, created_by, created_at, last_activity_at, message_count, version),
            last,
        ) = list_row(&row)?;
        let (unread_count, m_id, author_id, body, m_created_at, deleted, seq) = last;
        let last_message = m_id.map(|m| {
            let deleted = deleted.unwrap_or(false);
            json!({"id": m, "conversation_id": id, "author_id": author_id, "body": if deleted { None } else { body },
                   "created_at": m_created_at, "deleted": deleted, "cursor": seq.map(|s| s.to_string())})
        });
        items.push(json!({
            "id": id, "kind": kind, "title": title, "topic": topic, "created_by": created_by, "created_at": created_at,
            "last_activity_at": last_activity_at, "message_count": message_count, "version": version,
            "unread_count": unread_count, "last_message": last_message,
        }));
    }
    Ok(respond(StatusCode::OK, envelope(json!(items), page.meta(total), None), None))
}

fn list_row(row: &sqlx::postgres::PgRow) -> Result<ListRow, sqlx::Error> {
    use sqlx::Row;
    Ok((
        (
            row.try_get("id")?,
            row.try_get("kind")?,
            row.try_get("title")?,
            row.try_get("topic")?,
            row.try_get("created_by")?,
            row.try_get("created_at")?,
            row.try_get("last_activity_at")?,
            row.try_get("message_count")?,
            row.try_get("version")?,
        ),
        (
            row.try_get("unread_count")?,
            row.try_get("m_id")?,
            row.try_get("author_id")?,
            row.try_get("body")?,
            row.try_get("m_created_at")?,
            row.try_get("deleted")?,
            row.try_get("seq")?,
        ),
    ))
}

/// The conversation with its members, as the read model has it, and its version.
async fn conversation_json(pool: &PgPool, principal: &Principal, id: Uuid) -> Result<(Value, i64), ApiError> {
    let (id, kind, title, topic, created_by, created_at, last_activity_at, message_count, archived, version) =
        visible(pool, principal, id).await?;
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
    Ok((data, version))
}

#[tracing::instrument(skip_all)]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    MinPosition(min): MinPosition,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    consistency::projections(&state, &["conversations"], min).await?;
    let (data, version) = conversation_json(state.app.store.pool(), &principal, id).await?;
    let response = respond(StatusCode::OK, envelope(data, json!({}), None), None);
    Ok(with_etag(response, version))
}

/// Changes a group's title and/or topic (`"topic": null` clears it); its admins only.
#[tracing::instrument(skip_all)]
async fn update(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson { raw, .. }: ApiJson<serde_json::Map<String, Value>>,
) -> Result<Response, ApiError> {
    let title = match nullable_field(&raw, "title")? {
        Some(None) => return Err(ApiError::invalid("title", "cannot be cleared")),
        title => title.flatten(),
    };
    let topic = nullable_field(&raw, "topic")?;
    let done = state.app.commands.update_conversation(&principal.ctx, id, title.as_deref(), topic).await?;
    let c = &done.aggregate;
    let data =
        json!({"id": c.id, "kind": c.kind, "title": c.title, "topic": c.topic, "archived": c.archived});
    Ok(ok(data, done.cursor))
}

/// Archives a conversation: gone from lists and reads.
#[tracing::instrument(skip_all)]
async fn archive(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let done = state.app.commands.archive_conversation(&principal.ctx, id).await?;
    done.cursor.map(no_content).ok_or_else(ApiError::not_found)
}

/// Removes a member (an admin), or leaves (the member themself).
#[tracing::instrument(skip_all)]
async fn remove_member(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((id, user_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Response, ApiError> {
    let done = state.app.commands.remove_member(&principal.ctx, id, user_id).await?;
    done.cursor.map(no_content).ok_or_else(ApiError::not_found)
}

#[derive(Deserialize)]
struct ReadBody {
    message_id: Uuid,
}

/// The caller has read up to `message_id`: it drives `unread_count`.
#[tracing::instrument(skip_all)]
async fn read(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson { value: body, .. }: ApiJson<ReadBody>,
) -> Result<Response, ApiError> {
    let done = state.app.commands.mark_read(&principal.ctx, id, body.message_id).await?;
    let data = json!({"conversation_id": id, "message_id": body.message_id});
    Ok(ok(data, done.cursor))
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
