//! Standard Webhooks (v1) signatures: HMAC-SHA256 of `"{id}.{timestamp}.{body}"` keyed with the
//! secret's decoded key, sent as `v1,<base64>`; several, space-separated, when several secrets
//! sign.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

use super::secrets::signing_key;

type HmacSha256 = hmac::Hmac<Sha256>;

/// How far a signed timestamp may be from now, either way.
pub const TOLERANCE_SECONDS: i64 = 5 * 60;

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` header for `body` sent as message `id` at `timestamp`, one signature
/// per secret.
pub fn signature_header(secrets: &[String], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .filter_map(|secret| signing_key(secret))
        .map(|key| format!("v1,{}", STANDARD.encode(mac(&key, id, timestamp, body).finalize().into_bytes())))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a signed request was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing webhook-id, webhook-timestamp or webhook-signature header")]
    MissingHeader,
    #[error("webhook-timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is more than 5 minutes away")]
    StaleTimestamp,
    #[error("webhook-signature has no v1 signature")]
    BadSignatureFormat,
    #[error("no signature matches")]
    NoMatch,
}

/// Checks a request's headers against `secrets` at `now` (Unix seconds): the timestamp within
/// the tolerance and any `v1` signature matching any secret, compared in constant time.
pub fn verify(
    secrets: &[String],
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let (Some(id), Some(timestamp), Some(signatures)) = (id, timestamp, signatures) else {
        return Err(VerifyError::MissingHeader);
    };
    let timestamp: i64 = timestamp.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
    if (now - timestamp).abs() > TOLERANCE_SECONDS {
        return Err(VerifyError::StaleTimestamp);
    }
    let given: Vec<&str> = signatures.split_whitespace().filter_map(|s| s.strip_prefix("v1,")).collect();
    if given.is_empty() {
        return Err(VerifyError::BadSignatureFormat);
    }
    // One that is not base64 matches nothing.
    let given: Vec<Vec<u8>> = given.iter().filter_map(|s| STANDARD.decode(s).ok()).collect();
    for key in secrets.iter().filter_map(|s| signing_key(s)) {
        for signature in &given {
            if mac(&key, id, timestamp, body).verify_slice(signature).is_ok() {
                return Ok(());
            }
        }
    }
    Err(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks specification's test vectors.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_as_the_specification_s_example() {
        assert_eq!(signature_header(&[SECRET.into()], ID, TIMESTAMP, BODY), SIGNATURE);
    }

    #[test]
    fn verifies_within_the_window_with_any_secret_and_refuses_otherwise() {
        let secrets = vec!["whsec_b3RoZXI=".to_owned(), SECRET.to_owned()];
        let ok = |sig: &str, now| verify(&secrets, Some(ID), Some("1614265330"), Some(sig), BODY, now);
        assert_eq!(ok(SIGNATURE, TIMESTAMP), Ok(()));
        assert_eq!(ok(&format!("v1,AAAA {SIGNATURE}"), TIMESTAMP + 300), Ok(()));
        assert_eq!(ok(SIGNATURE, TIMESTAMP + 301), Err(VerifyError::StaleTimestamp));
        assert_eq!(
            ok("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF=", TIMESTAMP),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(ok("g0hM9SsE", TIMESTAMP), Err(VerifyError::BadSignatureFormat));
        assert_eq!(
            verify(&secrets, Some(ID), Some("yesterday"), Some(SIGNATURE), BODY, TIMESTAMP),
            Err(VerifyError::BadTimestamp)
        );
        assert_eq!(verify(&secrets, None, None, None, BODY, TIMESTAMP), Err(VerifyError::MissingHeader));
    }
}
