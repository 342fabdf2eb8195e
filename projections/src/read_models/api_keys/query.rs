//! API keys as lists show them: never the secret or its hash.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::reads::{ReadModel, Reads};

const READS: &[ReadModel] = &[ReadModel::ApiKeys];

/// An API key as every answer shows it; the creation's answer adds the secret.
#[derive(utoipa::ToSchema, Clone, Debug, Serialize)]
pub struct ApiKeyView {
    pub id: Uuid,
    pub name: String,
    /// The secret's first characters, to tell keys apart.
    pub prefix: String,
    pub permissions: Vec<String>,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// `active`, `revoked` or `expired` (as of the read).
    pub status: &'static str,
    pub version: i64,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    name: String,
    prefix: String,
    permissions: Vec<String>,
    created_by: Uuid,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    version: i64,
}

/// A key's status at `now`.
pub fn status(
    revoked_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> &'static str {
    match (revoked_at, expires_at) {
        (Some(_), _) => "revoked",
        (None, Some(at)) if at <= now => "expired",
        _ => "active",
    }
}

/// The account's keys, newest first, revoked and expired ones included, with how many there are.
pub async fn list(
    reads: &Reads<'_>,
    account_id: Uuid,
    limit: i64,
    offset: i64,
) -> Result<(Vec<ApiKeyView>, i64), ProjectionError> {
    let pool = reads.of(READS).await?;
    let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM api_keys WHERE account_id = $1")
        .bind(account_id)
        .fetch_one(pool)
        .await?;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, name, prefix, permissions, created_by, created_at, expires_at, revoked_at, last_used_at, \
                version \
         FROM api_keys WHERE account_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
    )
    .bind(account_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let now = Utc::now();
    let keys = rows
        .into_iter()
        .map(|r| ApiKeyView {
            status: status(r.revoked_at, r.expires_at, now),
            id: r.id,
            name: r.name,
            prefix: r.prefix,
            permissions: r.permissions,
            created_by: r.created_by,
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            last_used_at: r.last_used_at,
            version: r.version,
        })
        .collect();
    Ok((keys, total))
}
