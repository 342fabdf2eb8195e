//! Idempotency records: the stored response of a command sent with an `Idempotency-Key`,
//! written in the command's own transaction so a retried request appends nothing.

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::cursor::LogCursor;
use crate::error::StoreError;
use crate::hash::write_canonical;

/// How long a key is remembered.
pub const RETENTION_HOURS: i32 = 24;

/// A key, scoped to (account, credential, method and path) by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub account_id: Uuid,
    pub scope: String,
    pub key: String,
    /// Hash of the request body as canonical JSON (see [`request_hash`]).
    pub request_hash: Vec<u8>,
}

/// A response as it was first given.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Value,
    pub position: Option<LogCursor>,
}

/// What to do with a request carrying a key.
#[derive(Clone, Debug, PartialEq)]
pub enum IdempotencyCheck {
    /// First time: run it, and [`record`] the response in the same transaction.
    New,
    /// Seen with the same body: answer this, write nothing.
    Replay(StoredResponse),
    /// Seen with another body.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}

/// The hash of a request body, independent of key order and white space.
pub fn request_hash(body: &Value) -> Vec<u8> {
    let mut canonical = Vec::new();
    write_canonical(&mut canonical, body);
    Sha256::digest(&canonical).to_vec()
}

/// Checks `key` inside the command's transaction, and holds the key until that transaction
/// ends, so a concurrent duplicate sees [`IdempotencyCheck::InProgress`].
pub async fn check(conn: &mut PgConnection, key: &IdempotencyKey) -> Result<IdempotencyCheck, StoreError> {
    let (locked,): (bool,) = sqlx::query_as(
        "SELECT pg_try_advisory_xact_lock(hashtextextended('idempotency/' || $1::text || '/' || $2 || '/' || $3, 0))",
    )
    .bind(key.account_id)
    .bind(&key.scope)
    .bind(&key.key)
    .fetch_one(&mut *conn)
    .await?;
    if !locked {
        return Ok(IdempotencyCheck::InProgress);
    }
    let row: Option<(Vec<u8>, i32, Value, Option<String>)> = sqlx::query_as(
        "SELECT request_hash, status, response, position FROM idempotency_records \
         WHERE account_id = $1 AND scope = $2 AND key = $3 \
           AND created_at > now() - make_interval(hours => $4)",
    )
    .bind(key.account_id)
    .bind(&key.scope)
    .bind(&key.key)
    .bind(RETENTION_HOURS)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        None => IdempotencyCheck::New,
        Some((hash, _, _, _)) if hash != key.request_hash => IdempotencyCheck::Mismatch,
        Some((_, status, body, position)) => IdempotencyCheck::Replay(StoredResponse {
            status: u16::try_from(status).unwrap_or(200),
            body,
            position: position.and_then(|p| p.parse().ok()),
        }),
    })
}

/// Stores the response for `key`; replaces an expired record of the same key.
pub async fn record(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    response: &StoredResponse,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO idempotency_records (account_id, scope, key, request_hash, status, response, position) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (account_id, scope, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, \
           status = EXCLUDED.status, response = EXCLUDED.response, position = EXCLUDED.position, \
           created_at = now()",
    )
    .bind(key.account_id)
    .bind(&key.scope)
    .bind(&key.key)
    .bind(&key.request_hash)
    .bind(i32::from(response.status))
    .bind(&response.body)
    .bind(response.position.map(|p| p.to_string()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
