//! The account's custom roles as lists show them (the system roles are constants, not rows).

use serde::Serialize;
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::reads::{ReadModel, Reads};

const READS: &[ReadModel] = &[ReadModel::Roles];

/// A role, system or custom.
#[derive(utoipa::ToSchema, Clone, Debug, Serialize, sqlx::FromRow)]
pub struct RoleView {
    pub id: Uuid,
    pub name: String,
    pub permissions: Vec<String>,
    /// System roles (`owner`, `admin`, `member`) cannot be changed.
    pub system: bool,
    /// 0 for system roles.
    pub version: i64,
}

/// The account's custom roles by name.
pub async fn custom_roles(reads: &Reads<'_>, account_id: Uuid) -> Result<Vec<RoleView>, ProjectionError> {
    let pool = reads.of(READS).await?;
    Ok(sqlx::query_as(
        "SELECT id, name, permissions, false AS system, version FROM roles \
         WHERE account_id = $1 ORDER BY lower(name), id",
    )
    .bind(account_id)
    .fetch_all(pool)
    .await?)
}
