//! `/api/v1/conversations/{id}/messages`: post, and read with cursor pagination both ways.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use parley_aggregates::conversation::{Conversation, ConversationEvent};
use parley_commands::Executed;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::conversations::visible;
use super::Routes;
use crate::http::auth::Principal;
use crate::http::consistency;
use crate::http::error::{ApiError, Code};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKeyHeader, IfMatch, MinPosition};
use crate::http::respond::{
    created_stored, envelope, idempotent, no_content, ok, respond, scoped_key, with_etag, with_key,
};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default()
        .get("/conversations/{id}/messages", list)
        .post("/conversations/{id}/messages", post)
        .patch("/conversations/{id}/messages/{message_id}", edit)
        .delete("/conversations/{id}/messages/{message_id}", delete)
}

/// Pages hold at most this many messages.
const MAX_LIMIT: i64 = 100;
const DEFAULT_LIMIT: i64 = 50;

#[derive(Deserialize)]
struct PostBody {
    body: String,
}

/// The posted message, from the command's own outcome.
fn posted(done: &Executed<Conversation>) -> Value {
    let Some((
        ConversationEvent::MessagePosted { message_id, conversation_id, author_id, body, mentions },
        appended,
    )) = done.events.last().zip(done.appended.last())
    else {
        return json!(null);
    };
    json!({
        "id": message_id, "conversation_id": conversation_id, "author_id": author_id, "body": body,
        "mentions": mentions, "created_at": appended.recorded_at, "edited_at": null, "deleted": false,
        "reactions": [], "version": 1, "cursor": appended.version.to_string(),
    })
}

#[tracing::instrument(skip_all)]
async fn post(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson { value: body, raw }: ApiJson<PostBody>,
) -> Result<Response, ApiError> {
    let path = format!("/api/v1/conversations/{id}/messages");
    let key = key.map(|k| scoped_key(&principal, "POST", &path, &k, &raw));
    let render = |done: &Executed<Conversation>| created_stored(posted(done), done.cursor);
    let idem = with_key(key.as_ref(), &render);
    let outcome = state.app.commands.post_message_with(&principal.ctx, id, &body.body, idem.as_ref()).await?;
    Ok(idempotent(outcome, &render))
}

#[derive(Deserialize)]
struct Page {
    before: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
}

/// A message cursor: the message's place in its conversation (opaque to clients).
fn message_cursor(raw: Option<&str>, name: &str) -> Result<Option<i64>, ApiError> {
    match raw {
        None => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| ApiError::new(Code::BadRequest, format!("{name} is not a message cursor"))),
    }
}

type MessageRow = (Uuid, Uuid, Uuid, Option<String>, DateTime<Utc>, Option<DateTime<Utc>>, bool, i32, i64);

#[tracing::instrument(skip_all)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    MinPosition(min): MinPosition,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Response, ApiError> {
    let before = message_cursor(page.before.as_deref(), "before")?;
    let after = message_cursor(page.after.as_deref(), "after")?;
    if before.is_some() && after.is_some() {
        return Err(ApiError::new(Code::BadRequest, "give before or after, not both"));
    }
    let limit = page.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    consistency::projections(&state, &["conversations", "messages"], min).await?;
    let pool = state.app.store.pool();
    visible(pool, &principal, id).await?;
    let newer = after.is_some();
    let sql = if newer {
        "SELECT id, conversation_id, author_id, body, created_at, edited_at, deleted, version, seq FROM messages \
         WHERE conversation_id = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3"
    } else {
        "SELECT id, conversation_id, author_id, body, created_at, edited_at, deleted, version, seq FROM messages \
         WHERE conversation_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
    };
    let mut rows: Vec<MessageRow> = sqlx::query_as(sql)
        .bind(id)
        .bind(after.or(before).unwrap_or(i64::MAX))
        .bind(limit + 1)
        .fetch_all(pool)
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    // The cursor to go on in the same direction: past the oldest (older) or newest (newer) row.
    let next_cursor = if more { rows.last().map(|r| r.8.to_string()) } else { None };
    if newer {
        rows.reverse();
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let mut reactions = reactions_of(pool, &ids).await?;
    let messages: Vec<Value> = rows
        .into_iter()
        .map(|(id, conversation_id, author_id, body, created_at, edited_at, deleted, version, seq)| {
            json!({
                "id": id, "conversation_id": conversation_id, "author_id": author_id,
                "body": if deleted { None } else { body }, "created_at": created_at, "edited_at": edited_at,
                "deleted": deleted, "reactions": reactions.remove(&id).unwrap_or_default(), "version": version,
                "cursor": seq.to_string(),
            })
        })
        .collect();
    Ok(respond(
        StatusCode::OK,
        envelope(json!(messages), json!({"next_cursor": next_cursor, "limit": limit}), None),
        None,
    ))
}

/// The reactions of each message: `[{emoji, count, user_ids}]`, emoji in the order first used.
pub async fn reactions_of(
    pool: &sqlx::PgPool,
    message_ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<Value>>, ApiError> {
    let rows: Vec<(Uuid, String, i64, Vec<Uuid>)> = sqlx::query_as(
        "SELECT message_id, emoji, count(*), array_agg(user_id ORDER BY created_at, id) FROM reactions \
         WHERE message_id = ANY($1) GROUP BY message_id, emoji ORDER BY message_id, min(created_at), emoji",
    )
    .bind(message_ids)
    .fetch_all(pool)
    .await?;
    let mut out: HashMap<Uuid, Vec<Value>> = HashMap::new();
    for (message_id, emoji, count, user_ids) in rows {
        out.entry(message_id)
            .or_default()
            .push(json!({"emoji": emoji, "count": count, "user_ids": user_ids}));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct EditBody {
    body: String,
}

/// Replaces a message's body: its author, with `If-Match` against lost updates.
#[tracing::instrument(skip_all)]
async fn edit(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((id, message_id)): ApiPath<(Uuid, Uuid)>,
    IfMatch(expected): IfMatch,
    ApiJson { value: body, .. }: ApiJson<EditBody>,
) -> Result<Response, ApiError> {
    let done = state.app.commands.edit_message(&principal.ctx, id, message_id, &body.body, expected).await?;
    let Some((ConversationEvent::MessageEdited { body, version, author_id, .. }, appended)) =
        done.events.last().zip(done.appended.last())
    else {
        return Err(ApiError::not_found());
    };
    let data = json!({
        "id": message_id, "conversation_id": id, "author_id": author_id, "body": body,
        "edited_at": appended.recorded_at, "deleted": false, "version": version,
    });
    Ok(with_etag(ok(data, done.cursor), i64::from(*version)))
}

/// Deletes a message (it keeps its place without a body): its author, a conversation admin, or
/// `messages.moderate`.
#[tracing::instrument(skip_all)]
async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((id, message_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Response, ApiError> {
    let done = state.app.commands.delete_message(&principal.ctx, id, message_id).await?;
    done.cursor.map(no_content).ok_or_else(ApiError::not_found)
}
