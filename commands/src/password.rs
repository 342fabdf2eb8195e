//! Passwords: argon2id, hashed and verified off the async runtime, and never inside a write
//! transaction (hashing takes tens of milliseconds; a transaction held open that long would hold
//! every reader of the log back).

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};

/// The shortest password accepted.
pub const MIN_LENGTH: usize = 10;
/// The longest (bounds hashing work a client can ask for).
pub const MAX_LENGTH: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("must be at least {MIN_LENGTH} characters")]
    TooShort,
    #[error("must be at most {MAX_LENGTH} characters")]
    TooLong,
    #[error("could not hash the password")]
    Hashing,
}

/// Hashes and verifies passwords with fixed argon2id parameters.
#[derive(Clone, Debug)]
pub struct PasswordHasher {
    params: Params,
}

impl Default for PasswordHasher {
    /// OWASP's recommendation: argon2id, 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        Self { params: Params::default() }
    }
}

impl PasswordHasher {
    /// Cheaper parameters, for tests and benchmarks that register many users.
    pub fn fast_insecure() -> Self {
        Self { params: Params::new(1024, 1, 1, None).unwrap_or_default() }
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Checks the password's length, then hashes it on the blocking pool.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let n = password.chars().count();
        if n < MIN_LENGTH {
            return Err(PasswordError::TooShort);
        }
        if n > MAX_LENGTH {
            return Err(PasswordError::TooLong);
        }
        let argon2 = self.argon2();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            argon2
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|_| PasswordError::Hashing)
        })
        .await
        .map_err(|_| PasswordError::Hashing)?
    }

    /// Whether `password` matches `hash` (constant-time comparison inside argon2).
    pub async fn verify(&self, password: &str, hash: &str) -> bool {
        if password.chars().count() > MAX_LENGTH {
            return false;
        }
        let argon2 = self.argon2();
        let (password, hash) = (password.to_owned(), hash.to_owned());
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .is_ok_and(|parsed| argon2.verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let h = PasswordHasher::fast_insecure();
        let hash = h.hash("correct horse battery").await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(h.verify("correct horse battery", &hash).await);
        assert!(!h.verify("wrong horse battery", &hash).await);
        assert!(!h.verify("x", "not a hash").await);
    }

    #[tokio::test]
    async fn short_passwords_are_refused() {
        assert_eq!(PasswordHasher::fast_insecure().hash("short").await, Err(PasswordError::TooShort));
    }
}
