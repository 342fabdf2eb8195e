//! `/api/v1/conversations/{id}/messages`: post, read with cursor pagination both ways, edit,
//! delete. Every answer carries a message as [`MessageView`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use parley_aggregates::conversation::Conversation;
use parley_aggregates::values::MessageBody;
use parley_commands::Executed;
use parley_projections::read_models::conversations::query as conversations;
use parley_projections::read_models::messages::query::{self as messages, Direction, MessageView};
use parley_projections::read_models::users::query as users;
use parley_projections::{ReadModel, Reads};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::door::{answer, Command};
use crate::http::error::{ApiError, Code};
use crate::http::extract::{ApiPath, ApiQuery, IfMatch, Reading};
use crate::http::openapi::{Doc, Meta};
use crate::http::respond::{envelope, no_content, ok, respond, with_etag};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default()
        .get("/conversations/{id}/messages", list)
        .doc(
            Doc::new("Messages, newest first within a page; `before`/`after` a message cursor")
                .query::<Page>()
                .lists::<MessageView>(Meta::Cursor)
                .reads(),
        )
        .post("/conversations/{id}/messages", post)
        .doc(
            Doc::new("Post a message (1..10,000 characters)")
                .body::<PostBody>()
                .answers::<MessageView>(201)
                .errors(&[Code::Conflict]),
        )
        .patch("/conversations/{id}/messages/{message_id}", edit)
        .doc(
            Doc::new("Edit a message (its author)")
                .body::<EditBody>()
                .answers::<MessageView>(200)
                .if_match()
                .errors(&[Code::Forbidden, Code::Conflict]),
        )
        .delete("/conversations/{id}/messages/{message_id}", delete)
        .doc(
            Doc::new("Delete a message: it keeps its place without a body")
                .describe("Its author, a conversation admin, or `messages.moderate`.")
                .no_content()
                .errors(&[Code::Forbidden, Code::Conflict]),
        )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = NewMessage)]
struct PostBody {
    /// 1..10,000 characters, not only white space; `@name` mentions a member.
    #[schema(min_length = 1, max_length = 10000, pattern = "\\S", example = "Ship it @ann")]
    body: String,
}

/// The posted message, from the command's own outcome: what the read model will show.
pub fn posted(done: &Executed<Conversation>) -> Option<MessageView> {
    let (event, appended) = done.events.last().zip(done.appended.last())?;
    MessageView::posted(event, appended.recorded_at, appended.version)
}

#[tracing::instrument(skip_all)]
async fn post(
    State(state): State<AppState>,
    reads: Reading,
    ApiPath(id): ApiPath<Uuid>,
    Command { principal, body, door, .. }: Command<PostBody>,
) -> Result<Response, ApiError> {
    let render =
        |done: &Executed<Conversation>| answer(StatusCode::CREATED, json!(posted(done)), done.cursor);
    // A live stream's chat is open to whoever may see the stream, members or not.
    if state.app.creator.chat_reader(&principal.ctx, id).await? {
        let idempotency = door.idempotency(&render);
        let outcome =
            state.app.creator.post_as_reader(&principal.ctx, id, &body.body, idempotency.as_ref()).await?;
        return Ok(door.answer(outcome, &render));
    }
    // Who `@name` means is the users read model's to say; the conversation keeps its members. A
    // body the command will refuse (too long) is not looked through.
    let mentions = if body.body.chars().count() <= MessageBody::MAX {
        users::mentioned(&reads.get().settled(), principal.account_id(), &body.body).await?
    } else {
        Vec::new()
    };
    let idempotency = door.idempotency(&render);
    let outcome = state
        .app
        .commands
        .post_message_with(&principal.ctx, id, &body.body, mentions, idempotency.as_ref())
        .await?;
    Ok(door.answer(outcome, &render))
}

#[derive(Deserialize, utoipa::IntoParams)]
struct Page {
    /// A message cursor: the messages just older than it.
    before: Option<String>,
    /// A message cursor: the messages just newer than it.
    after: Option<String>,
    /// 1..100 (default 50).
    limit: Option<i64>,
}

/// A message cursor given as `name`.
fn message_cursor(raw: Option<&str>, name: &str) -> Result<Option<i64>, ApiError> {
    raw.map(|s| {
        messages::parse_cursor(s)
            .ok_or_else(|| ApiError::new(Code::BadRequest, format!("{name} is not a message cursor")))
    })
    .transpose()
}

#[tracing::instrument(skip_all)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    reads: Reading,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Response, ApiError> {
    let before = message_cursor(page.before.as_deref(), "before")?;
    let after = message_cursor(page.after.as_deref(), "after")?;
    let (direction, cursor) = match (before, after) {
        (Some(_), Some(_)) => return Err(ApiError::new(Code::BadRequest, "give before or after, not both")),
        (_, Some(after)) => (Direction::Newer, Some(after)),
        (before, None) => (Direction::Older, before),
    };
    let limit = page.limit.unwrap_or(messages::DEFAULT_LIMIT).clamp(1, messages::MAX_LIMIT);
    let reads = reads.get().waited(&[ReadModel::Conversations, ReadModel::Messages]).await?;
    if !conversations::visible(&reads, principal.account_id(), principal.user_id()?, id).await?
        && !state.app.creator.chat_reader(&principal.ctx, id).await?
    {
        return Err(ApiError::not_found());
    }
    let page = messages::page(&reads, id, direction, cursor, limit).await?;
    let meta = json!({"next_cursor": page.next_cursor, "limit": limit});
    Ok(respond(StatusCode::OK, envelope(json!(page.items), meta, None), None))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = MessageEdit)]
struct EditBody {
    #[schema(min_length = 1, max_length = 10000, pattern = "\\S", example = "Ship it tomorrow")]
    body: String,
}

/// Replaces a message's body: its author, with `If-Match` against lost updates. Answers the
/// message as the read model has it once it includes the edit.
#[tracing::instrument(skip_all)]
async fn edit(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((id, message_id)): ApiPath<(Uuid, Uuid)>,
    IfMatch(expected): IfMatch,
    crate::http::extract::ApiJson { value: body, .. }: crate::http::extract::ApiJson<EditBody>,
) -> Result<Response, ApiError> {
    let done = state.app.commands.edit_message(&principal.ctx, id, message_id, &body.body, expected).await?;
    let reads = Reads::new(state.app.store.pool(), done.cursor);
    let message = messages::one(&reads, id, message_id).await?.ok_or_else(ApiError::not_found)?;
    let version = i64::from(message.version);
    Ok(with_etag(ok(json!(message), done.cursor), version))
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
