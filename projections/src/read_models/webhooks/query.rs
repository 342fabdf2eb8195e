//! Webhook subscriptions and incoming hooks as the API shows them: never a secret.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::reads::{ReadModel, Reads};

const READS: &[ReadModel] = &[ReadModel::Webhooks];

/// A subscription as every answer shows it; its creation and rotation add the secret.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct SubscriptionView {
    pub id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// Tells secrets apart (after a rotation) without revealing one.
    pub secret_fingerprint: String,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// An incoming hook as every answer shows it; its creation adds the secret.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct HookView {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub name: String,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub version: i64,
}

const SUBSCRIPTION: &str =
    "SELECT id, url, event_types, description, enabled, disabled_reason, secret_fingerprint, \
                                   created_by, created_at, updated_at, version FROM webhook_subscriptions";

/// The account's subscriptions, newest first, and how many there are.
pub async fn subscriptions(
    reads: &Reads<'_>,
    account_id: Uuid,
    limit: i64,
    offset: i64,
) -> Result<(Vec<SubscriptionView>, i64), ProjectionError> {
    let pool = reads.of(READS).await?;
    let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM webhook_subscriptions WHERE account_id = $1")
        .bind(account_id)
        .fetch_one(pool)
        .await?;
    let items = sqlx::query_as(&format!(
        "{SUBSCRIPTION} WHERE account_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
    ))
    .bind(account_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    Ok((items, total))
}

/// One subscription of the account.
pub async fn subscription(
    reads: &Reads<'_>,
    account_id: Uuid,
    id: Uuid,
) -> Result<Option<SubscriptionView>, ProjectionError> {
    let pool = reads.of(READS).await?;
    Ok(sqlx::query_as(&format!("{SUBSCRIPTION} WHERE account_id = $1 AND id = $2"))
        .bind(account_id)
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

const HOOK: &str = "SELECT id, conversation_id, name, created_by, created_at, version FROM incoming_webhooks";

/// The account's incoming hooks, newest first, and how many there are.
pub async fn hooks(
    reads: &Reads<'_>,
    account_id: Uuid,
    limit: i64,
    offset: i64,
) -> Result<(Vec<HookView>, i64), ProjectionError> {
    let pool = reads.of(READS).await?;
    let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM incoming_webhooks WHERE account_id = $1")
        .bind(account_id)
        .fetch_one(pool)
        .await?;
    let items = sqlx::query_as(&format!(
        "{HOOK} WHERE account_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
    ))
    .bind(account_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    Ok((items, total))
}

/// One incoming hook of the account.
pub async fn hook(
    reads: &Reads<'_>,
    account_id: Uuid,
    id: Uuid,
) -> Result<Option<HookView>, ProjectionError> {
    let pool = reads.of(READS).await?;
    Ok(sqlx::query_as(&format!("{HOOK} WHERE account_id = $1 AND id = $2"))
        .bind(account_id)
        .bind(id)
        .fetch_optional(pool)
        .await?)
}
