//! Conversations as every answer shows them ([`ConversationView`]: the POST and PATCH answers,
//! the list, one conversation), and who may read one.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::read_models::messages::query::{self as messages, MessageView};
use crate::reads::{ReadModel, Reads};

/// A conversation as shown reads its reader's unread count and last message from the messages
/// read model.
const READS: &[ReadModel] = &[ReadModel::Conversations, ReadModel::Messages];

/// A conversation: the one shape of a conversation in every answer.
#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Serialize)]
pub struct ConversationView {
    pub id: Uuid,
    /// `group` or `direct`.
    pub kind: String,
    pub title: Option<String>,
    pub topic: Option<String>,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
    pub message_count: i64,
    pub archived: bool,
    pub members: Vec<MemberView>,
    /// The reader's unread messages.
    pub unread_count: i64,
    pub last_message: Option<MessageView>,
    pub version: i64,
}

#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct MemberView {
    pub user_id: Uuid,
    /// `admin` or `member`.
    pub role: String,
    pub joined_at: DateTime<Utc>,
}

impl ConversationView {
    /// A conversation as its first events make it: what the read model will hold for it until
    /// it changes.
    pub fn started(
        id: Uuid,
        kind: String,
        title: Option<String>,
        created_by: Uuid,
        created_at: DateTime<Utc>,
        members: Vec<MemberView>,
    ) -> Self {
        Self {
            id,
            kind,
            title,
            topic: None,
            created_by,
            created_at,
            last_activity_at: created_at,
            message_count: 0,
            archived: false,
            members,
            unread_count: 0,
            last_message: None,
            version: 1,
        }
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    kind: String,
    title: Option<String>,
    topic: Option<String>,
    created_by: Uuid,
    created_at: DateTime<Utc>,
    last_activity_at: DateTime<Utc>,
    message_count: i64,
    archived: bool,
    version: i64,
}

const COLUMNS: &str = "c.id, c.kind, c.title, c.topic, c.created_by, c.created_at, c.last_activity_at, \
                       c.message_count, c.archived, c.version";

/// Whether `user` may read the conversation: it is of their account, not archived, and they are
/// a member.
pub async fn visible(
    reads: &Reads<'_>,
    account_id: Uuid,
    user_id: Uuid,
    conversation_id: Uuid,
) -> Result<bool, ProjectionError> {
    let pool = reads.of(&[ReadModel::Conversations]).await?;
    let (visible,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM conversations c \
                        JOIN conversation_members m ON m.conversation_id = c.id AND m.user_id = $3 \
                        WHERE c.id = $1 AND c.account_id = $2 AND NOT c.archived)",
    )
    .bind(conversation_id)
    .bind(account_id)
    .bind(user_id)
    .fetch_one(pool)
    .await?;
    Ok(visible)
}

/// The conversation as `user` sees it, if they may.
pub async fn one(
    reads: &Reads<'_>,
    account_id: Uuid,
    user_id: Uuid,
    conversation_id: Uuid,
) -> Result<Option<ConversationView>, ProjectionError> {
    let reads = reads.waited(READS).await?;
    let pool = reads.of(READS).await?;
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM conversations c \
         WHERE c.id = $1 AND c.account_id = $2 AND NOT c.archived \
           AND EXISTS (SELECT 1 FROM conversation_members m WHERE m.conversation_id = c.id AND m.user_id = $3)"
    ))
    .bind(conversation_id)
    .bind(account_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    Ok(views(&reads, user_id, row.into_iter().collect()).await?.pop())
}

/// `user`'s conversations (of `kind` when given), most recent activity first, `limit` from
/// `offset`, with how many there are.
pub async fn list(
    reads: &Reads<'_>,
    account_id: Uuid,
    user_id: Uuid,
    kind: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<ConversationView>, i64), ProjectionError> {
    let reads = reads.waited(READS).await?;
    let pool = reads.of(READS).await?;
    let (total,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM conversation_members cm JOIN conversations c ON c.id = cm.conversation_id \
         WHERE cm.user_id = $1 AND cm.account_id = $2 AND NOT c.archived AND ($3::text IS NULL OR c.kind = $3)",
    )
    .bind(user_id)
    .bind(account_id)
    .bind(kind)
    .fetch_one(pool)
    .await?;
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM conversation_members cm \
         JOIN conversations c ON c.id = cm.conversation_id AND NOT c.archived \
         WHERE cm.user_id = $1 AND cm.account_id = $2 AND ($3::text IS NULL OR c.kind = $3) \
         ORDER BY c.last_activity_at DESC, c.id LIMIT $4 OFFSET $5"
    ))
    .bind(user_id)
    .bind(account_id)
    .bind(kind)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    Ok((views(&reads, user_id, rows).await?, total))
}

/// The rows as `user` sees them: with their members, and the reader's unread count and last
/// message from the messages read model. `reads` have waited for both already.
async fn views(
    reads: &Reads<'_>,
    user_id: Uuid,
    rows: Vec<Row>,
) -> Result<Vec<ConversationView>, ProjectionError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let pool = reads.of(READS).await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let members: Vec<(Uuid, Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT conversation_id, user_id, role, joined_at FROM conversation_members \
         WHERE conversation_id = ANY($1) ORDER BY joined_at, user_id",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut members_of: HashMap<Uuid, Vec<MemberView>> = HashMap::new();
    for (conversation_id, user_id, role, joined_at) in members {
        members_of.entry(conversation_id).or_default().push(MemberView { user_id, role, joined_at });
    }
    let mut last = messages::last_messages(reads, &ids).await?;
    let unread = messages::unread_counts(reads, user_id, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|r| ConversationView {
            members: members_of.remove(&r.id).unwrap_or_default(),
            unread_count: unread.get(&r.id).copied().unwrap_or(0),
            last_message: last.remove(&r.id),
            id: r.id,
            kind: r.kind,
            title: r.title,
            topic: r.topic,
            created_by: r.created_by,
            created_at: r.created_at,
            last_activity_at: r.last_activity_at,
            message_count: r.message_count,
            archived: r.archived,
            version: r.version,
        })
        .collect())
}
