//! The outside services the creator platform speaks to: LiveKit, whose access tokens let a
//! viewer into a stream's media room, and Stripe, whose signed webhooks report paid checkouts.
//! Each is configured or absent; absent, what needs it answers 503 (LiveKit) or 401 (Stripe).

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::{Config, Secret};

/// How long a join token lets its holder in.
pub const JOIN_TOKEN_HOURS: i64 = 6;
/// How far a Stripe signature's timestamp may be from now.
pub const STRIPE_TOLERANCE_SECONDS: i64 = 300;

#[derive(Clone, Debug, Default)]
pub struct Integrations {
    pub livekit: Option<LiveKit>,
    pub stripe: Option<Secret>,
}

impl Integrations {
    pub fn from_config(config: &Config) -> Self {
        let livekit = match (&config.livekit_api_key, &config.livekit_api_secret) {
            (Some(key), Some(secret)) if !key.is_empty() && !secret.expose().is_empty() => Some(LiveKit {
                api_key: key.clone(),
                api_secret: secret.clone(),
                url: config.livekit_url.clone(),
            }),
            _ => None,
        };
        let stripe = config.stripe_webhook_secret.clone().filter(|s| !s.expose().is_empty());
        Self { livekit, stripe }
    }
}

/// A LiveKit project's credentials.
#[derive(Clone, Debug)]
pub struct LiveKit {
    pub api_key: String,
    pub api_secret: Secret,
    pub url: Option<String>,
}

/// What LiveKit lets the token's holder do in the room.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VideoGrant<'a> {
    room_join: bool,
    room: &'a str,
    can_publish: bool,
    can_subscribe: bool,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: String,
    name: &'a str,
    nbf: i64,
    exp: i64,
    jti: String,
    video: VideoGrant<'a>,
}

impl LiveKit {
    /// An access token in LiveKit's format (HS256 with the API secret, `iss` the API key, `sub`
    /// the user) for `room`, valid from `now` for six hours; hosts may publish, viewers only
    /// subscribe.
    pub fn join_token(
        &self,
        user_id: uuid::Uuid,
        name: &str,
        room: &str,
        can_publish: bool,
        now: DateTime<Utc>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            iss: &self.api_key,
            sub: user_id.to_string(),
            name,
            nbf: now.timestamp(),
            exp: now.timestamp() + JOIN_TOKEN_HOURS * 3600,
            jti: user_id.to_string(),
            video: VideoGrant { room_join: true, room, can_publish, can_subscribe: true },
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(self.api_secret.expose().as_bytes()),
        )
    }
}

/// Why a Stripe delivery was not accepted as Stripe's.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StripeSignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("the Stripe-Signature header is not t=...,v1=...")]
    Malformed,
    #[error("the signature's timestamp is more than 5 minutes away")]
    Stale,
    #[error("no v1 signature matches")]
    Mismatch,
}

/// Checks `Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]`: HMAC-SHA256 of `t.body` keyed with
/// the whole webhook secret, any `v1` matching (constant-time), within five minutes of `now`.
pub fn verify_stripe(
    secret: &Secret,
    header: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), StripeSignatureError> {
    let header = header.ok_or(StripeSignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", sig)) => {
                signatures.push(hex::decode(sig).map_err(|_| StripeSignatureError::Malformed)?)
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(StripeSignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(StripeSignatureError::Malformed);
    }
    if (now.timestamp() - timestamp).abs() > STRIPE_TOLERANCE_SECONDS {
        return Err(StripeSignatureError::Stale);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .map_err(|_| StripeSignatureError::Malformed)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    if signatures.iter().any(|s| bool::from(s.as_slice().ct_eq(expected.as_slice()))) {
        Ok(())
    } else {
        Err(StripeSignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn a_stripe_signature_holds_only_for_its_body_secret_and_time() {
        let secret = Secret::new("whsec_test");
        let now = Utc::now();
        let t = now.timestamp();
        let body = br#"{"type":"checkout.session.completed"}"#;
        let good = format!("t={t},v1={}", sign("whsec_test", t, body));
        assert_eq!(verify_stripe(&secret, Some(&good), body, now), Ok(()));
        let rotated = format!("t={t},v1={},v1={}", sign("old", t, body), sign("whsec_test", t, body));
        assert_eq!(verify_stripe(&secret, Some(&rotated), body, now), Ok(()));
        assert_eq!(verify_stripe(&secret, Some(&good), b"{}", now), Err(StripeSignatureError::Mismatch));
        let other = format!("t={t},v1={}", sign("whsec_other", t, body));
        assert_eq!(verify_stripe(&secret, Some(&other), body, now), Err(StripeSignatureError::Mismatch));
        let old = format!("t={},v1={}", t - 301, sign("whsec_test", t - 301, body));
        assert_eq!(verify_stripe(&secret, Some(&old), body, now), Err(StripeSignatureError::Stale));
        assert_eq!(verify_stripe(&secret, None, body, now), Err(StripeSignatureError::Missing));
        assert_eq!(verify_stripe(&secret, Some("v1=zz"), body, now), Err(StripeSignatureError::Malformed));
    }
}
