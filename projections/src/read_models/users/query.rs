//! Users as answers show them: one's own profile, the account's list, a public profile, and
//! who a message mentions.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::reads::{ReadModel, Reads};

const READS: &[ReadModel] = &[ReadModel::Users];

/// The caller's own profile, with email and roles (permissions are added by who resolves roles).
#[derive(utoipa::ToSchema, Clone, Debug, Serialize, sqlx::FromRow)]
pub struct OwnProfile {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
    pub bio: Option<String>,
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub version: i64,
    #[sqlx(flatten)]
    pub account: AccountView,
}

#[derive(utoipa::ToSchema, Clone, Debug, Serialize, sqlx::FromRow)]
pub struct AccountView {
    #[sqlx(rename = "account_id")]
    pub id: Uuid,
    #[sqlx(rename = "account_name")]
    pub name: String,
}

/// A user in the account's list.
#[derive(utoipa::ToSchema, Clone, Debug, Serialize, sqlx::FromRow)]
pub struct UserSummary {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
    pub roles: Vec<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    /// Connected now, on any node (presence is a signal: it is not in the log).
    pub online: bool,
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// What anyone of the account may see of a user (no email).
#[derive(utoipa::ToSchema, Clone, Debug, Serialize, sqlx::FromRow)]
pub struct PublicProfile {
    pub id: Uuid,
    pub name: String,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
    pub bio: Option<String>,
    pub active: bool,
    pub version: i64,
    /// Connected now, on any node (presence is a signal: it is not in the log).
    pub online: bool,
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// The `online` and `last_seen_at` columns of a user `u`, from the cluster's presence.
const PRESENCE: &str = "EXISTS (SELECT 1 FROM presence_connections p WHERE p.user_id = u.id) AS online, \
     (SELECT l.last_seen_at FROM presence_last_seen l WHERE l.user_id = u.id) AS last_seen_at";

/// An active user's own profile.
pub async fn own_profile(
    reads: &Reads<'_>,
    account_id: Uuid,
    user_id: Uuid,
) -> Result<Option<OwnProfile>, ProjectionError> {
    let pool = reads.of(READS).await?;
    Ok(sqlx::query_as(
        "SELECT u.id, u.name, u.email, u.display_name, u.avatar_url, u.bio, u.roles, u.created_at, u.version, \
                a.id AS account_id, a.name AS account_name \
         FROM users u JOIN accounts a ON a.id = u.account_id \
         WHERE u.id = $1 AND u.account_id = $2 AND u.active",
    )
    .bind(user_id)
    .bind(account_id)
    .fetch_optional(pool)
    .await?)
}

/// `search` as a LIKE prefix, its wildcards taken literally.
fn prefix_pattern(search: &str) -> String {
    let escaped = search.trim().to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("{escaped}%")
}

/// The account's users by name, `limit` from `offset`, with how many match; `search` matches a
/// name or email prefix.
pub async fn list(
    reads: &Reads<'_>,
    account_id: Uuid,
    search: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<UserSummary>, i64), ProjectionError> {
    let pool = reads.of(READS).await?;
    let pattern = search.filter(|s| !s.trim().is_empty()).map(prefix_pattern);
    let (total,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM users WHERE account_id = $1 \
           AND ($2::text IS NULL OR lower(name) LIKE $2 OR email LIKE $2)",
    )
    .bind(account_id)
    .bind(&pattern)
    .fetch_one(pool)
    .await?;
    let users = sqlx::query_as(&format!(
        "SELECT u.id, u.name, u.email, u.display_name, u.avatar_url, u.roles, u.active, u.created_at, {PRESENCE} \
         FROM users u WHERE u.account_id = $1 AND ($2::text IS NULL OR lower(u.name) LIKE $2 OR u.email LIKE $2) \
         ORDER BY lower(u.name), u.id LIMIT $3 OFFSET $4"
    ))
    .bind(account_id)
    .bind(&pattern)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    Ok((users, total))
}

/// A user of the account.
pub async fn public_profile(
    reads: &Reads<'_>,
    account_id: Uuid,
    user_id: Uuid,
) -> Result<Option<PublicProfile>, ProjectionError> {
    let pool = reads.of(READS).await?;
    Ok(sqlx::query_as(&format!(
        "SELECT u.id, u.name, u.display_name, u.avatar_url, u.bio, u.active, u.version, {PRESENCE} \
         FROM users u WHERE u.id = $1 AND u.account_id = $2"
    ))
    .bind(user_id)
    .bind(account_id)
    .fetch_optional(pool)
    .await?)
}

/// A message looks up at most this many distinct names.
pub const MAX_MENTIONS: usize = 50;

/// The names a body mentions with `@name`, lowercased, without trailing punctuation: distinct,
/// in order, at most [`MAX_MENTIONS`].
pub fn mention_names(body: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let words = body.split(char::is_whitespace).filter_map(|w| w.strip_prefix('@'));
    for name in words.map(|w| w.trim_end_matches(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))) {
        let name = name.to_lowercase();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
            if names.len() == MAX_MENTIONS {
                break;
            }
        }
    }
    names
}

/// The active users of the account a body names with `@name` (display name or name, any case).
pub async fn mentioned(
    reads: &Reads<'_>,
    account_id: Uuid,
    body: &str,
) -> Result<Vec<Uuid>, ProjectionError> {
    let names = mention_names(body);
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let pool = reads.of(READS).await?;
    let found: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT id FROM users WHERE account_id = $1 AND active \
           AND (lower(display_name) = ANY($2) OR lower(name) = ANY($2))",
    )
    .bind(account_id)
    .bind(&names)
    .fetch_all(pool)
    .await?;
    Ok(found.into_iter().map(|(id,)| id).collect())
}

/// A user's name (for presence frames, which name whom they are about).
pub async fn name_of(reads: &Reads<'_>, user_id: Uuid) -> Result<Option<String>, ProjectionError> {
    let pool = reads.of(READS).await?;
    Ok(sqlx::query_scalar("SELECT name FROM users WHERE id = $1").bind(user_id).fetch_optional(pool).await?)
}

#[cfg(test)]
mod tests {
    use super::mention_names;

    #[test]
    fn mentions_are_names_after_an_at_sign() {
        assert_eq!(mention_names("hi @Ann, and @bob-b! @ alone, e@mail @ann"), vec!["ann", "bob-b"]);
        let many: String = (0..500).map(|i| format!("@n{i} ")).collect();
        assert_eq!(mention_names(&many).len(), super::MAX_MENTIONS);
    }
}
