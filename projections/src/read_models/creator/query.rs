//! Reads of the creator platform: spaces, experiences, streams and grants of one account, and
//! who may see an experience (a live grant at `now`, or `spaces.manage`, which the caller knows).

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::reads::{ReadModel, Reads};

const READS: &[ReadModel] = &[ReadModel::Creator];

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SpaceView {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub description: Option<String>,
    pub is_primary: bool,
    pub experiences_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ExperienceView {
    pub id: Uuid,
    pub space_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    /// `live_stream`, `course`, `community`, `consultation` or `digital_product`.
    pub experience_type: String,
    pub price_cents: i64,
    pub currency: String,
    pub published: bool,
    pub streams_count: i64,
    pub active_grants: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct StreamView {
    pub id: Uuid,
    pub experience_id: Uuid,
    pub title: String,
    pub starts_at: DateTime<Utc>,
    pub max_participants: Option<i32>,
    /// `scheduled`, `live` or `ended`.
    pub state: String,
    /// The media server's room, fixed at creation.
    pub room_name: String,
    /// The stream's chat, once live.
    pub conversation_id: Option<Uuid>,
    pub host_id: Option<Uuid>,
    /// Distinct viewers now, on every node (live streams; 0 otherwise). Not stored: the
    /// server fills it from its viewer counts.
    #[sqlx(default)]
    pub viewer_count: i64,
    pub peak_viewers: i64,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub archived_at: Option<DateTime<Utc>>,
    pub version: i64,
}

impl StreamView {
    /// A stream as its aggregate holds it after a command at `version`: what the read model
    /// will show.
    pub fn of(stream: &parley_aggregates::creator::Stream, version: i64) -> Option<Self> {
        let (id, experience_id, _) = stream.existing().ok()?;
        Some(Self {
            id,
            experience_id,
            title: stream.title.clone(),
            starts_at: stream.starts_at?,
            max_participants: stream.max_participants,
            state: stream.state.name().to_owned(),
            room_name: stream.room_name.clone(),
            conversation_id: stream.conversation_id,
            host_id: stream.host_id,
            viewer_count: 0,
            peak_viewers: stream.peak_viewers,
            started_at: stream.started_at,
            ended_at: stream.ended_at,
            archived_at: stream.archived_at,
            version,
        })
    }
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct GrantView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub experience_id: Uuid,
    pub expires_at: Option<DateTime<Utc>>,
    /// `active`, `revoked` or `expired` (an active one past its time reads as expired).
    pub status: String,
    /// `manual` or `checkout`.
    pub source: String,
    pub created_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub version: i64,
}

const SPACE: &str =
    "id, name, slug, description, is_primary, experiences_count, created_at, updated_at, version";
const EXPERIENCE: &str =
    "id, space_id, name, description, experience_type, price_cents, currency, published, \
     streams_count, active_grants, created_at, updated_at, version";
const STREAM: &str =
    "id, experience_id, title, starts_at, max_participants, state, room_name, conversation_id, \
     host_id, peak_viewers, started_at, ended_at, archived_at, version";

/// The account's spaces, primary first, then by name, with how many there are.
pub async fn spaces(
    reads: &Reads<'_>,
    account_id: Uuid,
    limit: i64,
    offset: i64,
) -> Result<(Vec<SpaceView>, i64), ProjectionError> {
    let pool = reads.of(READS).await?;
    let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM spaces WHERE account_id = $1")
        .bind(account_id)
        .fetch_one(pool)
        .await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {SPACE} FROM spaces WHERE account_id = $1 ORDER BY is_primary DESC, lower(name), id LIMIT $2 OFFSET $3"
    ))
    .bind(account_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    Ok((rows, total))
}

pub async fn space(
    reads: &Reads<'_>,
    account_id: Uuid,
    id: Uuid,
) -> Result<Option<SpaceView>, ProjectionError> {
    let pool = reads.of(READS).await?;
    Ok(sqlx::query_as(&format!("SELECT {SPACE} FROM spaces WHERE account_id = $1 AND id = $2"))
        .bind(account_id)
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

/// A space's experiences, oldest first: all of them for a manager (`user: None`), else those
/// the user holds a live grant for at `now`. A manager's total is the space's kept
/// `experiences_count` (never counted on read) and the page an index range; a viewer's rows and
/// total start from their own grants (few), not from the space's experiences (many).
pub async fn experiences(
    reads: &Reads<'_>,
    account_id: Uuid,
    space_id: Uuid,
    user: Option<Uuid>,
    now: DateTime<Utc>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<ExperienceView>, i64), ProjectionError> {
    let pool = reads.of(READS).await?;
    let Some(user) = user else {
        let total: Option<(i64,)> =
            sqlx::query_as("SELECT experiences_count FROM spaces WHERE id = $1 AND account_id = $2")
                .bind(space_id)
                .bind(account_id)
                .fetch_optional(pool)
                .await?;
        let rows = sqlx::query_as(&format!(
            "SELECT {EXPERIENCE} FROM experiences WHERE space_id = $1 AND account_id = $2 \
             ORDER BY created_at, id LIMIT $3 OFFSET $4"
        ))
        .bind(space_id)
        .bind(account_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await?;
        return Ok((rows, total.map_or(0, |(n,)| n)));
    };
    let granted =
        "e.account_id = $1 AND e.space_id = $2 AND e.id IN (SELECT g.experience_id FROM access_grants g \
         WHERE g.user_id = $3 AND g.status = 'active' AND (g.expires_at IS NULL OR g.expires_at > $4))";
    let (total,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM experiences e WHERE {granted}"))
        .bind(account_id)
        .bind(space_id)
        .bind(user)
        .bind(now)
        .fetch_one(pool)
        .await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {} FROM experiences e WHERE {granted} ORDER BY e.created_at, e.id LIMIT $5 OFFSET $6",
        prefixed(EXPERIENCE, "e")
    ))
    .bind(account_id)
    .bind(space_id)
    .bind(user)
    .bind(now)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    Ok((rows, total))
}

pub async fn experience(
    reads: &Reads<'_>,
    account_id: Uuid,
    id: Uuid,
) -> Result<Option<ExperienceView>, ProjectionError> {
    let pool = reads.of(READS).await?;
    Ok(sqlx::query_as(&format!("SELECT {EXPERIENCE} FROM experiences WHERE account_id = $1 AND id = $2"))
        .bind(account_id)
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

/// The account's published experiences with the most active grants first.
pub async fn popular(
    reads: &Reads<'_>,
    account_id: Uuid,
    limit: i64,
) -> Result<Vec<ExperienceView>, ProjectionError> {
    let pool = reads.of(READS).await?;
    Ok(sqlx::query_as(&format!(
        "SELECT {EXPERIENCE} FROM experiences WHERE account_id = $1 AND published \
         ORDER BY active_grants DESC, id LIMIT $2"
    ))
    .bind(account_id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Whether `user` holds a grant to the experience that is live at `now`.
pub async fn has_access(
    reads: &Reads<'_>,
    user_id: Uuid,
    experience_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, ProjectionError> {
    let pool = reads.of(READS).await?;
    let (found,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM access_grants WHERE user_id = $1 AND experience_id = $2 \
           AND status = 'active' AND (expires_at IS NULL OR expires_at > $3))",
    )
    .bind(user_id)
    .bind(experience_id)
    .bind(now)
    .fetch_one(pool)
    .await?;
    Ok(found)
}

pub async fn streams(
    reads: &Reads<'_>,
    account_id: Uuid,
    experience_id: Uuid,
    limit: i64,
    offset: i64,
) -> Result<(Vec<StreamView>, i64), ProjectionError> {
    let pool = reads.of(READS).await?;
    let (total,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM streams WHERE account_id = $1 AND experience_id = $2")
            .bind(account_id)
            .bind(experience_id)
            .fetch_one(pool)
            .await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {STREAM} FROM streams WHERE account_id = $1 AND experience_id = $2 \
         ORDER BY starts_at, id LIMIT $3 OFFSET $4"
    ))
    .bind(account_id)
    .bind(experience_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    Ok((rows, total))
}

pub async fn stream(
    reads: &Reads<'_>,
    account_id: Uuid,
    id: Uuid,
) -> Result<Option<StreamView>, ProjectionError> {
    let pool = reads.of(READS).await?;
    Ok(sqlx::query_as(&format!("SELECT {STREAM} FROM streams WHERE account_id = $1 AND id = $2"))
        .bind(account_id)
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

/// The account's grants, newest first, of one user and/or one experience when given.
pub async fn grants(
    reads: &Reads<'_>,
    account_id: Uuid,
    user_id: Option<Uuid>,
    experience_id: Option<Uuid>,
    now: DateTime<Utc>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<GrantView>, i64), ProjectionError> {
    let pool = reads.of(READS).await?;
    let filter =
        "account_id = $1 AND ($2::uuid IS NULL OR user_id = $2) AND ($3::uuid IS NULL OR experience_id = $3)";
    let (total,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM access_grants WHERE {filter}"))
        .bind(account_id)
        .bind(user_id)
        .bind(experience_id)
        .fetch_one(pool)
        .await?;
    let rows = sqlx::query_as(&format!(
        "SELECT id, user_id, experience_id, expires_at, \
           CASE WHEN status = 'active' AND expires_at <= $4 THEN 'expired' ELSE status END AS status, \
           source, created_at, ended_at, version \
         FROM access_grants WHERE {filter} ORDER BY created_at DESC, id DESC LIMIT $5 OFFSET $6"
    ))
    .bind(account_id)
    .bind(user_id)
    .bind(experience_id)
    .bind(now)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    Ok((rows, total))
}

/// `a, b` as `t.a, t.b`.
fn prefixed(columns: &str, table: &str) -> String {
    columns.split(',').map(|c| format!("{table}.{}", c.trim())).collect::<Vec<_>>().join(", ")
}
