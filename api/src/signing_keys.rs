//! The access-token signing keys, kept in `signing_keys`: the newest key that is not retired
//! signs (its id in the token's `kid` header); every key that is not retired verifies. A rotation
//! adds a key: new tokens carry it at once on every node, earlier ones stay valid until they
//! expire. Retiring a key refuses its tokens everywhere. Each node reloads the ring when the
//! table changes (looked at once a second), so no node restarts.
//!
//! The key of before key ids (`PARLEY_JWT_SECRET`, or the one generated into `settings`) enters
//! the ring at first start with an id derived from it; tokens without a `kid` are checked against
//! every key of the ring.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// One key of the ring.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct SigningKey {
    pub kid: String,
    pub secret: String,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

/// What the ring holds now: the key that signs and those that verify, by id.
#[derive(Clone, Debug)]
pub struct Ring {
    pub signing: SigningKey,
    pub verifying: BTreeMap<String, SigningKey>,
}

/// The id of a key: `k-` and the first 8 bytes of its secret's SHA-256 (tells keys apart
/// without showing them).
pub fn kid_of(secret: &str) -> String {
    format!("k-{}", hex::encode(&Sha256::digest(secret.as_bytes())[..8]))
}

/// A fresh random secret.
fn new_secret() -> String {
    let mut bytes = [0u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Makes sure the ring has a key: the configured secret (added once, kept if already there), or
/// the one generated into `settings` before key ids (so issued tokens stay valid), or a new one.
pub async fn ensure(pool: &PgPool, configured: Option<&str>) -> Result<(), sqlx::Error> {
    let secret = match configured.filter(|s| !s.is_empty()) {
        Some(secret) => Some(secret.to_owned()),
        None => {
            let (keys,): (i64,) = sqlx::query_as("SELECT count(*) FROM signing_keys").fetch_one(pool).await?;
            if keys > 0 {
                None
            } else {
                let kept: Option<(String,)> =
                    sqlx::query_as("SELECT value FROM settings WHERE key = 'jwt_secret'")
                        .fetch_optional(pool)
                        .await?;
                Some(kept.map_or_else(new_secret, |(s,)| s))
            }
        }
    };
    if let Some(secret) = secret {
        sqlx::query("INSERT INTO signing_keys (kid, secret) VALUES ($1, $2) ON CONFLICT (kid) DO NOTHING")
            .bind(kid_of(&secret))
            .bind(&secret)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Every key, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<SigningKey>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kid, secret, created_at, retired_at FROM signing_keys ORDER BY created_at DESC, kid DESC",
    )
    .fetch_all(pool)
    .await
}

/// The ring as the table holds it; `None` when no key is live.
pub async fn load(pool: &PgPool) -> Result<Option<Ring>, sqlx::Error> {
    let live: Vec<SigningKey> = list(pool).await?.into_iter().filter(|k| k.retired_at.is_none()).collect();
    let Some(signing) = live.first().cloned() else { return Ok(None) };
    let verifying = live.into_iter().map(|k| (k.kid.clone(), k)).collect();
    Ok(Some(Ring { signing, verifying }))
}

/// What changes when the ring changes (a key added or retired): nodes reload when it moves.
pub async fn generation(
    pool: &PgPool,
) -> Result<(i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>), sqlx::Error> {
    sqlx::query_as("SELECT count(*), max(created_at), max(retired_at) FROM signing_keys")
        .fetch_one(pool)
        .await
}

/// Adds a new key, which signs from now on (every node within a second); the others still
/// verify. Answers its id.
pub async fn rotate(pool: &PgPool) -> Result<String, sqlx::Error> {
    let secret = new_secret();
    let kid = kid_of(&secret);
    sqlx::query("INSERT INTO signing_keys (kid, secret) VALUES ($1, $2)")
        .bind(&kid)
        .bind(&secret)
        .execute(pool)
        .await?;
    Ok(kid)
}

/// Why a key cannot be retired.
#[derive(Debug, thiserror::Error)]
pub enum RetireError {
    #[error("no key {0}")]
    Unknown(String),
    #[error("{0} is the only live key: rotate first")]
    Last(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Retires a key: its tokens are refused on every node within a second (the next newest key
/// signs if it was signing). The last live key cannot be retired.
pub async fn retire(pool: &PgPool, kid: &str) -> Result<(), RetireError> {
    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await?;
    let live: Vec<(String,)> =
        sqlx::query_as("SELECT kid FROM signing_keys WHERE retired_at IS NULL").fetch_all(&mut *tx).await?;
    if !live.iter().any(|(k,)| k == kid) {
        return Err(RetireError::Unknown(kid.to_owned()));
    }
    if live.len() == 1 {
        return Err(RetireError::Last(kid.to_owned()));
    }
    sqlx::query("UPDATE signing_keys SET retired_at = clock_timestamp() WHERE kid = $1")
        .bind(kid)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
