//! `/api/v1/conversations` and memberships. Every answer carries a conversation as
//! [`ConversationView`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use cqrs_es::Aggregate;
use parley_aggregates::conversation::{Conversation, ConversationEvent, MemberRole};
use parley_commands::services::DirectStarted;
use parley_commands::{Executed, Idempotent};
use parley_eventstore::{LogCursor, StreamKey};
use parley_projections::read_models::conversations::query::{
    self as conversations, ConversationView, MemberView,
};
use parley_projections::Reads;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::door::{answer, Command};
use crate::http::error::{ApiError, Code};
use crate::http::extract::{nullable_field, ApiJson, ApiPath, ApiQuery, Pagination, Reading};
use crate::http::openapi::shapes::{AddedMember, ConversationChanges, ReadUpTo};
use crate::http::openapi::Doc;
use crate::http::respond::{envelope, no_content, respond, with_etag};
use crate::http::state::AppState;

pub fn router() -> Routes {
    Routes::default()
        .get("/conversations", list)
        .doc(
            Doc::new(
                "Joined conversations, most recent activity first, with unread counts and last messages",
            )
            .query::<ListParams>()
            .paged::<ConversationView>()
            .reads(),
        )
        .post("/conversations", create)
        .doc(
            Doc::new("Start a group, or a direct conversation (200 with the existing one of that pair)")
                .permission("conversations.create")
                .body::<CreateBody>()
                .answers::<ConversationView>(201)
                .answers::<ConversationView>(200),
        )
        .get("/conversations/{id}", show)
        .doc(Doc::new("A conversation with its members").answers::<ConversationView>(200).etag().reads())
        .patch("/conversations/{id}", update)
        .doc(
            Doc::new("Change a group's title or topic (its admins)")
                .body::<ConversationChanges>()
                .answers::<ConversationView>(200)
                .errors(&[Code::Forbidden, Code::Conflict]),
        )
        .delete("/conversations/{id}", archive)
        .doc(
            Doc::new("Archive a conversation (its admins, or `conversations.manage`)")
                .no_content()
                .errors(&[Code::Forbidden, Code::Conflict]),
        )
        .post("/conversations/{id}/memberships", add_member)
        .doc(
            Doc::new("Add a member to a group (its admins)")
                .body::<MemberBody>()
                .answers::<AddedMember>(201)
                .errors(&[Code::Forbidden, Code::Conflict]),
        )
        .delete("/conversations/{id}/memberships/{user_id}", remove_member)
        .doc(
            Doc::new("Remove a member (its admins), or leave")
                .no_content()
                .errors(&[Code::Forbidden, Code::Conflict]),
        )
        .post("/conversations/{id}/read", read)
        .doc(
            Doc::new("Mark read up to a message")
                .body::<ReadBody>()
                .answers::<ReadUpTo>(200)
                .errors(&[Code::Conflict]),
        )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = NewConversation)]
struct CreateBody {
    /// `direct` (one other member) or `group`.
    #[schema(pattern = "^(direct|group)$", example = "group")]
    kind: String,
    /// A group's title.
    #[schema(min_length = 1, max_length = 200, example = "Launch")]
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

/// A just-started conversation, from the command's own outcome: what the read model will show.
fn started(done: &Executed<Conversation>) -> Option<ConversationView> {
    let mut created_by = None;
    let mut members = Vec::new();
    for (event, appended) in done.events.iter().zip(&done.appended) {
        match event {
            ConversationEvent::ConversationStarted { created_by: by, .. } => created_by = Some(*by),
            ConversationEvent::MemberAdded { user_id, role, .. } => members.push(MemberView {
                user_id: *user_id,
                role: role_name(*role).into(),
                joined_at: appended.recorded_at,
            }),
            _ => {}
        }
    }
    let c = &done.aggregate;
    let created_at = done.appended.first()?.recorded_at;
    Some(ConversationView::started(c.id?, c.kind.clone(), c.title.clone(), created_by?, created_at, members))
}

fn created(done: &Executed<Conversation>) -> parley_eventstore::idempotency::StoredResponse {
    answer(StatusCode::CREATED, json!(started(done)), done.cursor)
}

#[tracing::instrument(skip_all)]
async fn create(State(state): State<AppState>, command: Command<CreateBody>) -> Result<Response, ApiError> {
    match command.body.kind.as_str() {
        "group" => {}
        "direct" => return create_direct(state, command).await,
        _ => return Err(ApiError::invalid("kind", "must be \"group\" or \"direct\"")),
    }
    let Command { principal, body, door, .. } = command;
    let title = body.title.unwrap_or_default();
    let idempotency = door.idempotency(&created);
    let outcome = state
        .app
        .commands
        .start_group_with(&principal.ctx, &title, &body.member_ids, idempotency.as_ref())
        .await?;
    Ok(door.answer(outcome, &created))
}

/// 201 with a new direct conversation, or 200 with the one the pair already has.
async fn create_direct(state: AppState, command: Command<CreateBody>) -> Result<Response, ApiError> {
    let Command { principal, body, door, .. } = command;
    let [other] = body.member_ids[..] else {
        return Err(ApiError::invalid("member_ids", "a direct conversation takes exactly one other member"));
    };
    let idempotency = door.idempotency(&created);
    match state.app.commands.start_direct_with(&principal.ctx, other, idempotency.as_ref()).await? {
        Idempotent::Fresh(DirectStarted::Created(done)) => {
            Ok(door.answer(Idempotent::Fresh(*done), &created))
        }
        Idempotent::Replayed(stored) => Ok(door.answer(Idempotent::Replayed(stored), &created)),
        Idempotent::Fresh(DirectStarted::Existing(id)) => {
            // The pair's conversation as the read model has it, once it includes the stream.
            let stream = StreamKey::new(Conversation::TYPE, id.to_string());
            let head = state.app.store.stream_head(&stream).await?.ok_or_else(ApiError::not_found)?;
            shown(&state, &principal, id, head, StatusCode::OK).await
        }
    }
}

/// The conversation as the read model has it once it includes `position`: `status`, the
/// position and its ETag.
async fn shown(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    position: LogCursor,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let reads = Reads::new(state.app.store.pool(), Some(position));
    let view = conversations::one(&reads, principal.account_id(), principal.user_id()?, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let version = view.version;
    let response = respond(status, envelope(json!(view), json!({}), Some(position)), Some(position));
    Ok(with_etag(response, version))
}

#[derive(Deserialize, utoipa::IntoParams)]
struct ListParams {
    /// `direct` or `group`.
    #[serde(default)]
    kind: Option<String>,
}

/// The caller's conversations, most recent activity first, each with its unread count and last
/// message.
#[tracing::instrument(skip_all)]
async fn list(
    principal: Principal,
    reads: Reading,
    page: Pagination,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let user_id = principal.user_id()?;
    let kind = params.kind.as_deref().filter(|k| !k.is_empty());
    let (items, total) = conversations::list(
        &reads.get(),
        principal.account_id(),
        user_id,
        kind,
        page.per_page,
        page.offset(),
    )
    .await?;
    Ok(respond(StatusCode::OK, envelope(json!(items), page.meta(total), None), None))
}

#[tracing::instrument(skip_all)]
async fn show(
    principal: Principal,
    reads: Reading,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let view = conversations::one(&reads.get(), principal.account_id(), principal.user_id()?, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let version = view.version;
    Ok(with_etag(respond(StatusCode::OK, envelope(json!(view), json!({}), None), None), version))
}

/// Changes a group's title and/or topic (`"topic": null` clears it); its admins only. Answers
/// the conversation once the read model includes the change.
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
    let stream = StreamKey::new(Conversation::TYPE, id.to_string());
    let position = match done.cursor {
        Some(position) => position,
        None => state.app.store.stream_head(&stream).await?.ok_or_else(ApiError::not_found)?,
    };
    shown(&state, &principal, id, position, StatusCode::OK).await
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

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = ReadMark)]
struct ReadBody {
    message_id: Uuid,
}

/// The caller has read up to `message_id`: it drives `unread_count`.
#[tracing::instrument(skip_all)]
async fn read(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    Command { principal, body, door, .. }: Command<ReadBody>,
) -> Result<Response, ApiError> {
    let message_id = body.message_id;
    let render = |done: &Executed<Conversation>| {
        answer(StatusCode::OK, json!({"conversation_id": id, "message_id": message_id}), done.cursor)
    };
    let idempotency = door.idempotency(&render);
    let outcome = state.app.commands.mark_read(&principal.ctx, id, message_id, idempotency.as_ref()).await?;
    Ok(door.answer(outcome, &render))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = NewMember)]
struct MemberBody {
    user_id: Uuid,
    /// `admin` or `member` (default).
    role: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn add_member(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    Command { principal, body, door, .. }: Command<MemberBody>,
) -> Result<Response, ApiError> {
    let role = match body.role.as_deref() {
        None | Some("member") => MemberRole::Member,
        Some("admin") => MemberRole::Admin,
        Some(_) => return Err(ApiError::invalid("role", "must be \"admin\" or \"member\"")),
    };
    let user_id = body.user_id;
    let render = move |done: &Executed<Conversation>| {
        let joined_at = done.appended.last().map(|a| a.recorded_at);
        let data = json!({"conversation_id": id, "user_id": user_id, "role": role_name(role), "joined_at": joined_at});
        answer(StatusCode::CREATED, data, done.cursor)
    };
    let idempotency = door.idempotency(&render);
    let outcome =
        state.app.commands.add_member_with(&principal.ctx, id, user_id, role, idempotency.as_ref()).await?;
    Ok(door.answer(outcome, &render))
}
