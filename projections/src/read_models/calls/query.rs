//! Calls as the API shows them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::reads::{ReadModel, Reads};

const READS: &[ReadModel] = &[ReadModel::Calls];

#[derive(utoipa::ToSchema, Clone, Debug, Serialize, sqlx::FromRow)]
pub struct ParticipantView {
    pub user_id: Uuid,
    /// `invited`, `joined`, `declined` or `left`.
    pub state: String,
    pub joined_at: Option<DateTime<Utc>>,
    pub left_at: Option<DateTime<Utc>>,
}

#[derive(utoipa::ToSchema, Clone, Debug, Serialize)]
pub struct CallView {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub kind: String,
    /// `calling`, `ringing`, `active`, `ended`, `declined` or `missed`.
    pub state: String,
    pub initiator_id: Uuid,
    pub participants: Vec<ParticipantView>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_s: Option<i64>,
    pub version: i64,
}

impl CallView {
    /// A call as its start left it (`calling`): what the read model will show.
    pub fn started(
        event: &parley_aggregates::call::CallEvent,
        at: DateTime<Utc>,
        version: i64,
    ) -> Option<Self> {
        let parley_aggregates::call::CallEvent::CallStarted {
            call_id,
            conversation_id,
            kind,
            initiator_id,
            callee_ids,
            ..
        } = event
        else {
            return None;
        };
        let caller = ParticipantView {
            user_id: *initiator_id,
            state: "joined".into(),
            joined_at: Some(at),
            left_at: None,
        };
        let callees = callee_ids.iter().map(|id| ParticipantView {
            user_id: *id,
            state: "invited".into(),
            joined_at: None,
            left_at: None,
        });
        Some(Self {
            id: *call_id,
            conversation_id: *conversation_id,
            kind: kind.clone(),
            state: "calling".into(),
            initiator_id: *initiator_id,
            participants: std::iter::once(caller).chain(callees).collect(),
            created_at: at,
            started_at: None,
            ended_at: None,
            duration_s: None,
            version,
        })
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    conversation_id: Uuid,
    kind: String,
    state: String,
    initiator_id: Uuid,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    duration_s: Option<i64>,
    version: i64,
}

const CALL: &str =
    "SELECT id, conversation_id, kind, state, initiator_id, created_at, started_at, ended_at, duration_s, \
                           version FROM calls";

/// The calls of `rows` with their participants.
async fn with_participants(pool: &sqlx::PgPool, rows: Vec<Row>) -> Result<Vec<CallView>, ProjectionError> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let people: Vec<(Uuid, ParticipantView)> = sqlx::query_as::<
        _,
        (Uuid, Uuid, String, Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    >(
        "SELECT call_id, user_id, state, joined_at, left_at FROM call_participants WHERE call_id = ANY($1) \
         ORDER BY call_id, joined_at NULLS LAST, user_id",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(call, user_id, state, joined_at, left_at)| {
        (call, ParticipantView { user_id, state, joined_at, left_at })
    })
    .collect();
    Ok(rows
        .into_iter()
        .map(|r| CallView {
            participants: people.iter().filter(|(c, _)| *c == r.id).map(|(_, p)| p.clone()).collect(),
            id: r.id,
            conversation_id: r.conversation_id,
            kind: r.kind,
            state: r.state,
            initiator_id: r.initiator_id,
            created_at: r.created_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
            duration_s: r.duration_s,
            version: r.version,
        })
        .collect())
}

/// One call of a conversation of the account.
pub async fn call(
    reads: &Reads<'_>,
    account_id: Uuid,
    conversation_id: Uuid,
    call_id: Uuid,
) -> Result<Option<CallView>, ProjectionError> {
    let pool = reads.of(READS).await?;
    let rows: Vec<Row> =
        sqlx::query_as(&format!("{CALL} WHERE id = $1 AND account_id = $2 AND conversation_id = $3"))
            .bind(call_id)
            .bind(account_id)
            .bind(conversation_id)
            .fetch_all(pool)
            .await?;
    Ok(with_participants(pool, rows).await?.pop())
}

/// The conversation's live call (calling, ringing or active), if any.
pub async fn active(
    reads: &Reads<'_>,
    account_id: Uuid,
    conversation_id: Uuid,
) -> Result<Option<CallView>, ProjectionError> {
    let pool = reads.of(READS).await?;
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "{CALL} WHERE conversation_id = $1 AND account_id = $2 AND state IN ('calling', 'ringing', 'active') \
         ORDER BY created_at DESC LIMIT 1"
    ))
    .bind(conversation_id)
    .bind(account_id)
    .fetch_all(pool)
    .await?;
    Ok(with_participants(pool, rows).await?.pop())
}

/// The conversation's calls, newest first, and how many there are.
pub async fn history(
    reads: &Reads<'_>,
    account_id: Uuid,
    conversation_id: Uuid,
    limit: i64,
    offset: i64,
) -> Result<(Vec<CallView>, i64), ProjectionError> {
    let pool = reads.of(READS).await?;
    let (total,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM calls WHERE conversation_id = $1 AND account_id = $2")
            .bind(conversation_id)
            .bind(account_id)
            .fetch_one(pool)
            .await?;
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "{CALL} WHERE conversation_id = $1 AND account_id = $2 ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(conversation_id)
    .bind(account_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    Ok((with_participants(pool, rows).await?, total))
}
