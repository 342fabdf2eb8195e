//! Invitations as lists show them (never their tokens).

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::reads::{ReadModel, Reads};

const READS: &[ReadModel] = &[ReadModel::Invitations];

#[derive(utoipa::ToSchema, Clone, Debug, Serialize, sqlx::FromRow)]
pub struct InvitationView {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub invited_by: Uuid,
    /// `pending`, `accepted`, `revoked`, or `expired` (a pending one past its time, as of the read).
    pub status: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// The account's invitations, newest first, with how many there are.
pub async fn list(
    reads: &Reads<'_>,
    account_id: Uuid,
    limit: i64,
    offset: i64,
) -> Result<(Vec<InvitationView>, i64), ProjectionError> {
    let pool = reads.of(READS).await?;
    let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM invitations WHERE account_id = $1")
        .bind(account_id)
        .fetch_one(pool)
        .await?;
    let mut rows: Vec<InvitationView> = sqlx::query_as(
        "SELECT id, email, role, invited_by, status, expires_at, created_at FROM invitations \
         WHERE account_id = $1 ORDER BY created_at DESC, id LIMIT $2 OFFSET $3",
    )
    .bind(account_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let now = Utc::now();
    for row in &mut rows {
        if row.status == "pending" && row.expires_at <= now {
            row.status = "expired".into();
        }
    }
    Ok((rows, total))
}
