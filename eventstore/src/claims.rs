//! Claims: cross-aggregate uniqueness (one email per user, one direct conversation per pair),
//! written in the append's transaction so a claim and the events that justify it commit together.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::StoreError;
use crate::event::StreamKey;

/// The result of trying to claim a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The value is now ours (or already was, by this same stream).
    Claimed,
    /// Another stream holds it.
    Taken(StreamKey),
}

/// Claims `(kind, value)` for `owner`. A concurrent claimer of the same value waits for this
/// transaction and then sees [`ClaimOutcome::Taken`].
pub async fn claim(
    conn: &mut PgConnection,
    account_id: Uuid,
    kind: &str,
    value: &str,
    owner: &StreamKey,
) -> Result<ClaimOutcome, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO claims (kind, value, account_id, owner_stream_type, owner_stream_id) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind, value) DO NOTHING",
    )
    .bind(kind)
    .bind(value)
    .bind(account_id)
    .bind(&owner.stream_type)
    .bind(&owner.stream_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(ClaimOutcome::Claimed);
    }
    match holder(conn, kind, value).await? {
        Some(holder) if &holder == owner => Ok(ClaimOutcome::Claimed),
        Some(holder) => Ok(ClaimOutcome::Taken(holder)),
        // Released between our insert and our read: claim it again.
        None => Box::pin(claim(conn, account_id, kind, value, owner)).await,
    }
}

/// The stream holding `(kind, value)`, if any.
pub async fn holder(
    conn: &mut PgConnection,
    kind: &str,
    value: &str,
) -> Result<Option<StreamKey>, StoreError> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT owner_stream_type, owner_stream_id FROM claims WHERE kind = $1 AND value = $2",
    )
    .bind(kind)
    .bind(value)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(t, i)| StreamKey::new(t, i)))
}

/// Gives up a claim held by `owner` (an email changed, a conversation archived).
pub async fn release(
    conn: &mut PgConnection,
    kind: &str,
    value: &str,
    owner: &StreamKey,
) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM claims WHERE kind = $1 AND value = $2 AND owner_stream_type = $3 AND owner_stream_id = $4",
    )
    .bind(kind)
    .bind(value)
    .bind(&owner.stream_type)
    .bind(&owner.stream_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Gives up every claim of `kind` that `owner` holds but `keep` (what a rename leaves behind;
/// `None`: all of them, as a deletion does).
pub async fn release_other(
    conn: &mut PgConnection,
    kind: &str,
    owner: &StreamKey,
    keep: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM claims WHERE kind = $1 AND owner_stream_type = $2 AND owner_stream_id = $3 \
           AND value IS DISTINCT FROM $4",
    )
    .bind(kind)
    .bind(&owner.stream_type)
    .bind(&owner.stream_id)
    .bind(keep)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
