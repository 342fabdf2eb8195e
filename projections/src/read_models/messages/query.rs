//! Messages as every answer shows them ([`MessageView`]: the POST answer, the PATCH answer,
//! pages, the last message of a conversation, WebSocket frames), and the queries over the
//! messages read model: pages both ways, one message, last messages, unread counts.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use parley_aggregates::conversation::ConversationEvent;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::reads::{ReadModel, Reads};

const READS: &[ReadModel] = &[ReadModel::Messages];

/// Pages hold at most this many messages.
pub const MAX_LIMIT: i64 = 100;
pub const DEFAULT_LIMIT: i64 = 50;

/// A message: the one shape of a message in every answer and frame.
#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Serialize)]
pub struct MessageView {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub author_id: Uuid,
    /// `None` once deleted.
    pub body: Option<String>,
    /// The members it mentions.
    pub mentions: Vec<Uuid>,
    pub created_at: DateTime<Utc>,
    pub edited_at: Option<DateTime<Utc>>,
    pub deleted: bool,
    pub reactions: Vec<ReactionSummary>,
    /// 1 when posted; grows with each change to it.
    pub version: i32,
    /// Its place in its conversation, for `before`/`after` (opaque to clients).
    pub cursor: String,
}

/// The reactions of one emoji on a message.
#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReactionSummary {
    pub emoji: String,
    pub count: i64,
    /// In the order they reacted.
    pub user_ids: Vec<Uuid>,
}

impl MessageView {
    /// A message as its `MessagePosted` event (at `seq`, the conversation stream's version,
    /// recorded at `created_at`) makes it: what the read model will hold for it until it changes.
    /// `None` for any other event.
    pub fn posted(event: &ConversationEvent, created_at: DateTime<Utc>, seq: i64) -> Option<Self> {
        let ConversationEvent::MessagePosted { message_id, conversation_id, author_id, body, mentions } =
            event
        else {
            return None;
        };
        Some(Self {
            id: *message_id,
            conversation_id: *conversation_id,
            author_id: *author_id,
            body: Some(body.clone()),
            mentions: mentions.clone(),
            created_at,
            edited_at: None,
            deleted: false,
            reactions: Vec::new(),
            version: 1,
            cursor: seq.to_string(),
        })
    }
}

/// Which way a page goes from its cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The messages just older than the cursor (or the newest, without one).
    Older,
    /// The messages just newer than the cursor.
    Newer,
}

/// A page of messages, newest first.
#[derive(Clone, Debug)]
pub struct MessagePage {
    pub items: Vec<MessageView>,
    /// Where the next page in the same direction starts; `None` at the end.
    pub next_cursor: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    conversation_id: Uuid,
    author_id: Uuid,
    body: Option<String>,
    mentions: Vec<Uuid>,
    created_at: DateTime<Utc>,
    edited_at: Option<DateTime<Utc>>,
    deleted: bool,
    version: i32,
    seq: i64,
}

const COLUMNS: &str =
    "id, conversation_id, author_id, body, mentions, created_at, edited_at, deleted, version, seq";

impl Row {
    fn view(self, reactions: &mut HashMap<Uuid, Vec<ReactionSummary>>) -> MessageView {
        MessageView {
            reactions: reactions.remove(&self.id).unwrap_or_default(),
            id: self.id,
            conversation_id: self.conversation_id,
            author_id: self.author_id,
            body: if self.deleted { None } else { self.body },
            mentions: self.mentions,
            created_at: self.created_at,
            edited_at: self.edited_at,
            deleted: self.deleted,
            version: self.version,
            cursor: self.seq.to_string(),
        }
    }
}

/// A message cursor as clients send it back: its place in the conversation.
pub fn parse_cursor(raw: &str) -> Option<i64> {
    raw.parse::<i64>().ok().filter(|n| *n >= 0)
}

/// Up to `limit` (1..=[`MAX_LIMIT`]) messages of a conversation from `cursor` in `direction`.
/// Visibility is the caller's to check first (the conversations read model).
pub async fn page(
    reads: &Reads<'_>,
    conversation_id: Uuid,
    direction: Direction,
    cursor: Option<i64>,
    limit: i64,
) -> Result<MessagePage, ProjectionError> {
    let pool = reads.of(READS).await?;
    let limit = limit.clamp(1, MAX_LIMIT);
    let sql = match direction {
        Direction::Newer => format!(
            "SELECT {COLUMNS} FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3"
        ),
        Direction::Older => format!(
            "SELECT {COLUMNS} FROM messages WHERE conversation_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        ),
    };
    let from = cursor.unwrap_or(match direction {
        Direction::Newer => 0,
        Direction::Older => i64::MAX,
    });
    let mut rows: Vec<Row> =
        sqlx::query_as(&sql).bind(conversation_id).bind(from).bind(limit + 1).fetch_all(pool).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    // The cursor to go on in the same direction: past the oldest (older) or newest (newer) row.
    let next_cursor = if more { rows.last().map(|r| r.seq.to_string()) } else { None };
    if direction == Direction::Newer {
        rows.reverse();
    }
    let items = views(pool, rows).await?;
    Ok(MessagePage { items, next_cursor })
}

/// One message of a conversation, as the read model has it.
pub async fn one(
    reads: &Reads<'_>,
    conversation_id: Uuid,
    message_id: Uuid,
) -> Result<Option<MessageView>, ProjectionError> {
    let pool = reads.of(READS).await?;
    let row: Option<Row> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM messages WHERE id = $1 AND conversation_id = $2"))
            .bind(message_id)
            .bind(conversation_id)
            .fetch_optional(pool)
            .await?;
    Ok(views(pool, row.into_iter().collect()).await?.pop())
}

/// The newest message of each conversation that has one.
pub async fn last_messages(
    reads: &Reads<'_>,
    conversation_ids: &[Uuid],
) -> Result<HashMap<Uuid, MessageView>, ProjectionError> {
    let pool = reads.of(READS).await?;
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT m.* FROM unnest($1::uuid[]) AS c(id) \
         CROSS JOIN LATERAL (SELECT {COLUMNS} FROM messages WHERE conversation_id = c.id \
                             ORDER BY seq DESC LIMIT 1) m"
    ))
    .bind(conversation_ids)
    .fetch_all(pool)
    .await?;
    Ok(views(pool, rows).await?.into_iter().map(|m| (m.conversation_id, m)).collect())
}

/// `user`'s unread count in each of the conversations (those with none read are absent).
pub async fn unread_counts(
    reads: &Reads<'_>,
    user_id: Uuid,
    conversation_ids: &[Uuid],
) -> Result<HashMap<Uuid, i64>, ProjectionError> {
    let pool = reads.of(READS).await?;
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT conversation_id, unread_count FROM read_states WHERE user_id = $1 AND conversation_id = ANY($2)",
    )
    .bind(user_id)
    .bind(conversation_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The rows as views, with their reactions.
async fn views(pool: &PgPool, rows: Vec<Row>) -> Result<Vec<MessageView>, ProjectionError> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut reactions = reactions_of(pool, &ids).await?;
    Ok(rows.into_iter().map(|r| r.view(&mut reactions)).collect())
}

/// The reactions of each message, emoji in the order first used.
async fn reactions_of(
    pool: &PgPool,
    message_ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<ReactionSummary>>, ProjectionError> {
    if message_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, String, i64, Vec<Uuid>)> = sqlx::query_as(
        "SELECT message_id, emoji, count(*), array_agg(user_id ORDER BY created_at, id) FROM reactions \
         WHERE message_id = ANY($1) GROUP BY message_id, emoji ORDER BY message_id, min(created_at), emoji",
    )
    .bind(message_ids)
    .fetch_all(pool)
    .await?;
    let mut out: HashMap<Uuid, Vec<ReactionSummary>> = HashMap::new();
    for (message_id, emoji, count, user_ids) in rows {
        out.entry(message_id).or_default().push(ReactionSummary { emoji, count, user_ids });
    }
    Ok(out)
}
