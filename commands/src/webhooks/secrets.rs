//! Webhook signing secrets: made (`whsec_` + base64 of 32 random bytes), fingerprinted for the
//! log, and kept sealed in `webhook_secrets` under the platform's secrets key.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Every Standard Webhooks secret starts with this; the rest is the base64 of the key.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new secret.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// What the log records of a secret: enough to tell two apart, nothing to sign with.
pub fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    format!("sha256:{}", hex::encode(&digest[..8]))
}

/// The signing key of a secret: the base64-decoded part after `whsec_`.
pub fn signing_key(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()
}

/// Seals and opens secrets under the platform's key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox([redacted])")
    }
}

impl SecretBox {
    pub fn new(key: [u8; 32]) -> Self {
        Self { cipher: ChaCha20Poly1305::new(Key::from_slice(&key)) }
    }

    /// The configured key (base64 of 32 bytes), else the one kept in `settings`, made at first
    /// start like the JWT secret.
    pub async fn load(pool: &PgPool, configured: Option<&str>) -> Result<Self, String> {
        let encoded = match configured.filter(|k| !k.is_empty()) {
            Some(k) => k.to_owned(),
            None => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ('webhook_secrets_key', $1) ON CONFLICT (key) DO NOTHING",
                )
                .bind(STANDARD.encode(key))
                .execute(pool)
                .await
                .map_err(|e| e.to_string())?;
                let (value,): (String,) =
                    sqlx::query_as("SELECT value FROM settings WHERE key = 'webhook_secrets_key'")
                        .fetch_one(pool)
                        .await
                        .map_err(|e| e.to_string())?;
                value
            }
        };
        let bytes =
            STANDARD.decode(encoded.trim()).map_err(|_| "PARLEY_SECRETS_KEY is not base64".to_owned())?;
        let key: [u8; 32] =
            bytes.try_into().map_err(|_| "PARLEY_SECRETS_KEY must be the base64 of 32 bytes".to_owned())?;
        Ok(Self::new(key))
    }

    fn seal(&self, secret: &str) -> (Vec<u8>, Vec<u8>) {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        // Encrypting a few bytes in memory cannot fail.
        let sealed = self.cipher.encrypt(Nonce::from_slice(&nonce), secret.as_bytes()).unwrap_or_default();
        (nonce.to_vec(), sealed)
    }

    fn open(&self, nonce: &[u8], sealed: &[u8]) -> Option<String> {
        if nonce.len() != 12 {
            return None;
        }
        let plain = self.cipher.decrypt(Nonce::from_slice(nonce), sealed).ok()?;
        String::from_utf8(plain).ok()
    }

    /// Keeps `secret` for `owner_id`, in the caller's transaction.
    pub async fn store(
        &self,
        conn: &mut PgConnection,
        owner_id: Uuid,
        account_id: Uuid,
        secret: &str,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let (nonce, sealed) = self.seal(secret);
        sqlx::query(
            "INSERT INTO webhook_secrets (owner_id, account_id, fingerprint, nonce, sealed, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(owner_id)
        .bind(account_id)
        .bind(fingerprint(secret))
        .bind(nonce)
        .bind(sealed)
        .bind(now)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Lets every current secret of `owner_id` sign until `until` only (a rotation).
    pub async fn expire(
        &self,
        conn: &mut PgConnection,
        owner_id: Uuid,
        until: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE webhook_secrets SET valid_until = LEAST(COALESCE(valid_until, $2), $2) WHERE owner_id = $1",
        )
        .bind(owner_id)
        .bind(until)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// The secrets of `owner_id` that sign at `now`, newest first.
    pub async fn signing(
        &self,
        pool: &PgPool,
        owner_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, sqlx::Error> {
        let rows: Vec<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT nonce, sealed FROM webhook_secrets \
             WHERE owner_id = $1 AND (valid_until IS NULL OR valid_until > $2) ORDER BY created_at DESC",
        )
        .bind(owner_id)
        .bind(now)
        .fetch_all(pool)
        .await?;
        Ok(rows.iter().filter_map(|(nonce, sealed)| self.open(nonce, sealed)).collect())
    }

    /// Opens sealed `(nonce, sealed)` pairs; those that do not open are left out.
    pub fn open_all(&self, sealed: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
        sealed.iter().filter_map(|(nonce, sealed)| self.open(nonce, sealed)).collect()
    }

    /// Forgets every secret of `owner_id` (its subscription or hook was deleted).
    pub async fn forget(&self, conn: &mut PgConnection, owner_id: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM webhook_secrets WHERE owner_id = $1").bind(owner_id).execute(conn).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_has_the_standard_form_and_a_32_byte_key() {
        let secret = new_secret();
        assert!(secret.starts_with(SECRET_PREFIX));
        assert_eq!(signing_key(&secret).map(|k| k.len()), Some(32));
        assert_ne!(new_secret(), secret);
        assert!(fingerprint(&secret).starts_with("sha256:") && !fingerprint(&secret).contains(&secret[6..]));
    }

    #[test]
    fn a_sealed_secret_opens_only_under_its_key() {
        let (a, b) = (SecretBox::new([1; 32]), SecretBox::new([2; 32]));
        let (nonce, sealed) = a.seal("whsec_abc");
        assert_eq!(a.open(&nonce, &sealed).as_deref(), Some("whsec_abc"));
        assert_eq!(b.open(&nonce, &sealed), None);
        assert!(!sealed.windows(3).any(|w| w == b"abc"));
    }
}
