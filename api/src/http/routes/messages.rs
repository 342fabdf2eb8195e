//! `/api/v1/conversations/{id}/messages`: post, and read with cursor pagination both ways.

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
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKeyHeader, MinPosition};
use crate::http::respond::{created_stored, envelope, idempotent, respond, scoped_key, with_key};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default().get("/conversations/{id}/messages", list).post("/conversations/{id}/messages", post)
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
    let Some((ConversationEvent::MessagePosted { message_id, conversation_id, author_id, body }, appended)) =
        done.events.last().zip(done.appended.last())
    else {
        return json!(null);
    };
    json!({
        "id": message_id, "conversation_id": conversation_id, "author_id": author_id, "body": body,
        "created_at": appended.recorded_at, "edited_at": null, "deleted": false, "reactions": [], "version": 1,
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
    let messages: Vec<Value> = rows
        .into_iter()
        .map(|(id, conversation_id, author_id, body, created_at, edited_at, deleted, version, seq)| {
            json!({
                "id": id, "conversation_id": conversation_id, "author_id": author_id,
                "body": if deleted { None } else { body }, "created_at": created_at, "edited_at": edited_at,
                "deleted": deleted, "reactions": [], "version": version, "cursor": seq.to_string(),
            })
        })
        .collect();
    Ok(respond(
        StatusCode::OK,
        envelope(json!(messages), json!({"next_cursor": next_cursor, "limit": limit}), None),
        None,
    ))
}
