//! The stored analytics as the API shows them: read, never computed from the log.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::reads::{ReadModel, Reads};

/// One account's UTC day.
#[derive(utoipa::ToSchema, Clone, Debug, PartialEq, Serialize, sqlx::FromRow)]
pub struct DailyRow {
    pub date: NaiveDate,
    pub messages: i64,
    pub active_users: i64,
    pub new_conversations: i64,
    pub new_members: i64,
    pub reactions: i64,
    pub calls: i64,
    /// Ended calls' durations, in minutes with one decimal.
    pub call_minutes: f64,
    /// The day is over and counted: its row is final.
    pub sealed: bool,
    /// When it was sealed (the live row of today has none).
    pub computed_at: Option<DateTime<Utc>>,
}

/// One active user of a day, with what the API may show of them.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct ActiveUser {
    pub user_id: Uuid,
    pub name: Option<String>,
    pub email: Option<String>,
    pub messages: i64,
}

/// The account's days from `from` to `to` (inclusive), one row per day since the account's first
/// one and up to `today`, days without a stored row as zeros.
pub async fn daily(
    reads: &Reads<'_>,
    account_id: Uuid,
    from: NaiveDate,
    to: NaiveDate,
    today: NaiveDate,
) -> Result<Vec<DailyRow>, ProjectionError> {
    let pool = reads.of(&[ReadModel::Analytics]).await?;
    Ok(sqlx::query_as(
        "WITH first AS (SELECT min(day) AS day FROM analytics_daily WHERE account_id = $1) \
         SELECT d::date AS date, \
                coalesce(a.messages, 0) AS messages, coalesce(a.active_users, 0) AS active_users, \
                coalesce(a.new_conversations, 0) AS new_conversations, \
                coalesce(a.new_members, 0) AS new_members, coalesce(a.reactions, 0) AS reactions, \
                coalesce(a.calls, 0) AS calls, \
                round(coalesce(a.call_seconds, 0) / 60.0, 1)::float8 AS call_minutes, \
                coalesce(a.sealed, false) AS sealed, a.computed_at \
         FROM first, generate_series(greatest($2::date, first.day), least($3::date, $4::date), interval '1 day') AS d \
         LEFT JOIN analytics_daily a ON a.account_id = $1 AND a.day = d::date \
         ORDER BY d",
    )
    .bind(account_id)
    .bind(from)
    .bind(to)
    .bind(today)
    .fetch_all(pool)
    .await?)
}

/// The users active on `day`, most messages first, with their names and emails.
pub async fn active_users(
    reads: &Reads<'_>,
    account_id: Uuid,
    day: NaiveDate,
) -> Result<Vec<ActiveUser>, ProjectionError> {
    let pool = reads.of(&[ReadModel::Analytics, ReadModel::Users]).await?;
    Ok(sqlx::query_as(
        "SELECT a.user_id, u.name, u.email, a.messages FROM analytics_active_users a \
         LEFT JOIN users u ON u.id = a.user_id \
         WHERE a.account_id = $1 AND a.day = $2 ORDER BY a.messages DESC, a.user_id",
    )
    .bind(account_id)
    .bind(day)
    .fetch_all(pool)
    .await?)
}
