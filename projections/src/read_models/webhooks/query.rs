//! Webhook subscriptions and incoming hooks as the API shows them: never a secret.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::reads::{ReadModel, Reads};

const READS: &[ReadModel] = &[ReadModel::Webhooks];

/// A subscription as every answer shows it; its creation and rotation add the secret.
#[derive(utoipa::ToSchema, Clone, Debug, Serialize, sqlx::FromRow)]
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
#[derive(utoipa::ToSchema, Clone, Debug, Serialize, sqlx::FromRow)]
pub struct HookView {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub name: String,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub version: i64,
}

/// Where a kind of row is read from: its table and the columns of its view.
struct Rows {
    table: &'static str,
    columns: &'static str,
}

const SUBSCRIPTIONS: Rows = Rows {
    table: "webhook_subscriptions",
    columns: "id, url, event_types, description, enabled, disabled_reason, secret_fingerprint, \
              created_by, created_at, updated_at, version",
};

const HOOKS: Rows = Rows {
    table: "incoming_webhooks",
    columns: "id, conversation_id, name, created_by, created_at, version",
};

impl Rows {
    /// The account's rows, newest first, and how many there are.
    async fn page<T>(
        &self,
        reads: &Reads<'_>,
        account_id: Uuid,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<T>, i64), ProjectionError>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let pool = reads.of(READS).await?;
        let (total,): (i64,) =
            sqlx::query_as(&format!("SELECT count(*) FROM {} WHERE account_id = $1", self.table))
                .bind(account_id)
                .fetch_one(pool)
                .await?;
        let items = sqlx::query_as(&format!(
            "SELECT {} FROM {} WHERE account_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
            self.columns, self.table
        ))
        .bind(account_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await?;
        Ok((items, total))
    }

    /// One row of the account.
    async fn one<T>(
        &self,
        reads: &Reads<'_>,
        account_id: Uuid,
        id: Uuid,
    ) -> Result<Option<T>, ProjectionError>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let pool = reads.of(READS).await?;
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM {} WHERE account_id = $1 AND id = $2",
            self.columns, self.table
        ))
        .bind(account_id)
        .bind(id)
        .fetch_optional(pool)
        .await?)
    }
}

/// The account's subscriptions, newest first, and how many there are.
pub async fn subscriptions(
    reads: &Reads<'_>,
    account_id: Uuid,
    limit: i64,
    offset: i64,
) -> Result<(Vec<SubscriptionView>, i64), ProjectionError> {
    SUBSCRIPTIONS.page(reads, account_id, limit, offset).await
}

/// One subscription of the account.
pub async fn subscription(
    reads: &Reads<'_>,
    account_id: Uuid,
    id: Uuid,
) -> Result<Option<SubscriptionView>, ProjectionError> {
    SUBSCRIPTIONS.one(reads, account_id, id).await
}

/// The account's incoming hooks, newest first, and how many there are.
pub async fn hooks(
    reads: &Reads<'_>,
    account_id: Uuid,
    limit: i64,
    offset: i64,
) -> Result<(Vec<HookView>, i64), ProjectionError> {
    HOOKS.page(reads, account_id, limit, offset).await
}

/// One incoming hook of the account.
pub async fn hook(
    reads: &Reads<'_>,
    account_id: Uuid,
    id: Uuid,
) -> Result<Option<HookView>, ProjectionError> {
    HOOKS.one(reads, account_id, id).await
}
