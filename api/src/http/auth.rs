//! Access tokens: short-lived HS256 JWTs carrying user, account, session, roles and the log
//! position the session started at. The secret comes from `PARLEY_JWT_SECRET`, or is generated
//! once and kept in the database so restarts and other nodes accept the same tokens.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use crate::signing_keys::{kid_of, Ring, SigningKey};
use parley_commands::services::API_KEY_PREFIX;
use parley_commands::{Actor, CommandContext};
use parley_eventstore::LogCursor;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::ApiError;
use super::state::AppState;
use crate::live::api_keys::{KeyHolder, KeyRefused};
use crate::live::roles::RoleDirectory;

/// Seconds an access token lives.
pub const ACCESS_TTL: i64 = 15 * 60;
const ACCESS: &str = "access";

/// What an access token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: Uuid,
    /// The account: every request acts in this account, never one named by the request.
    pub acc: Uuid,
    /// The session, for logout and revocation.
    pub sid: Uuid,
    pub jti: Uuid,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub typ: String,
    pub roles: Vec<String>,
    /// The log position the session started at: reads of one's own profile wait for it.
    pub pos: String,
    /// The user's stream version when issued: a later role change makes the token stale.
    #[serde(default)]
    pub rv: i64,
}

/// How many verified tokens a node remembers (cleared when full: a token is verified again).
const VERIFIED_CAPACITY: usize = 16 * 1024;

pub struct JwtKeys {
    /// The key that signs (with its id) and those that verify, by id; replaced whole when the
    /// ring changes.
    ring: RwLock<Arc<Keys>>,
    validation: Validation,
    /// Tokens whose signature and claims were verified, by their exact text: a client presents
    /// the same token for up to 15 minutes, and only the expiry can change its verdict.
    verified: RwLock<HashMap<String, Claims>>,
}

/// The keys in use, ready to sign and verify.
struct Keys {
    kid: String,
    encoding: EncodingKey,
    decoding: BTreeMap<String, DecodingKey>,
}

impl Keys {
    fn of(ring: &Ring) -> Self {
        Self {
            kid: ring.signing.kid.clone(),
            encoding: EncodingKey::from_secret(ring.signing.secret.as_bytes()),
            decoding: ring
                .verifying
                .iter()
                .map(|(kid, k)| (kid.clone(), DecodingKey::from_secret(k.secret.as_bytes())))
                .collect(),
        }
    }
}

impl JwtKeys {
    /// One key (tests, the benchmark): it signs and verifies.
    pub fn new(secret: &[u8]) -> Self {
        let secret = String::from_utf8_lossy(secret).into_owned();
        let key = SigningKey { kid: kid_of(&secret), secret, created_at: Utc::now(), retired_at: None };
        let ring = Ring { signing: key.clone(), verifying: BTreeMap::from([(key.kid.clone(), key)]) };
        Self::of_ring(&ring)
    }

    pub fn of_ring(ring: &Ring) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_nbf = true;
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "nbf", "sub"]);
        Self {
            ring: RwLock::new(Arc::new(Keys::of(ring))),
            validation,
            verified: RwLock::new(HashMap::new()),
        }
    }

    /// The ring changed (a rotation, a retirement): sign and verify with it from now on. Tokens
    /// verified before are checked again (a retired key's no longer pass).
    pub fn reload(&self, ring: &Ring) {
        if let Ok(mut current) = self.ring.write() {
            *current = Arc::new(Keys::of(ring));
        }
        if let Ok(mut verified) = self.verified.write() {
            verified.clear();
        }
    }

    fn keys(&self) -> Arc<Keys> {
        match self.ring.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The id of the key that signs now.
    pub fn signing_kid(&self) -> String {
        self.keys().kid.clone()
    }

    /// A new access token and its lifetime in seconds.
    pub fn issue(
        &self,
        user: Uuid,
        account: Uuid,
        session: Uuid,
        roles: &[String],
        roles_version: i64,
        pos: LogCursor,
    ) -> Result<(String, i64), ApiError> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user,
            acc: account,
            sid: session,
            jti: Uuid::now_v7(),
            iat: now,
            nbf: now,
            exp: now + ACCESS_TTL,
            typ: ACCESS.into(),
            roles: roles.to_vec(),
            pos: pos.to_string(),
            rv: roles_version,
        };
        let keys = self.keys();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(keys.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &keys.encoding).map_err(|e| ApiError::internal(&e))?;
        Ok((token, ACCESS_TTL))
    }

    /// The claims of a valid, unexpired access token signed with our key (HS256 only: `none`
    /// and every other algorithm are refused).
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let now = Utc::now().timestamp();
        if let Some(claims) = self.verified.read().ok().and_then(|v| v.get(token).cloned()) {
            if now < claims.exp {
                return Ok(claims);
            }
        }
        let invalid = || ApiError::new(super::error::Code::Unauthorized, "invalid or expired token");
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        let keys = self.keys();
        // A token names its key; one from before key ids is tried against every live key.
        let candidates: Vec<&DecodingKey> = match &header.kid {
            Some(kid) => keys.decoding.get(kid).into_iter().collect(),
            None => keys.decoding.values().collect(),
        };
        let data = candidates
            .into_iter()
            .find_map(|key| jsonwebtoken::decode::<Claims>(token, key, &self.validation).ok())
            .ok_or_else(invalid)?;
        if data.claims.typ != ACCESS {
            return Err(ApiError::new(super::error::Code::Unauthorized, "not an access token"));
        }
        // Only tokens already valid are remembered (one not yet valid is checked again).
        if data.claims.nbf <= now && now < data.claims.exp {
            if let Ok(mut verified) = self.verified.write() {
                if verified.len() >= VERIFIED_CAPACITY {
                    verified.clear();
                }
                verified.insert(token.to_owned(), data.claims.clone());
            }
        }
        Ok(data.claims)
    }
}

/// What a request authenticated with.
#[derive(Clone)]
pub enum Credential {
    /// A user's access token.
    Session(Claims),
    /// An API key, acting with its own permissions.
    ApiKey(Uuid),
}

/// The authenticated caller: its credential and the command context it grants.
#[derive(Clone)]
pub struct Principal {
    pub credential: Credential,
    pub ctx: CommandContext,
}

impl Principal {
    pub fn account_id(&self) -> Uuid {
        self.ctx.account_id
    }

    /// The signed-in user's token; an API key is no user (403).
    pub fn session(&self) -> Result<&Claims, ApiError> {
        match &self.credential {
            Credential::Session(claims) => Ok(claims),
            Credential::ApiKey(_) => {
                Err(ApiError::new(super::error::Code::Forbidden, "only a signed-in user can do this"))
            }
        }
    }

    /// The signed-in user; an API key is no user (403).
    pub fn user_id(&self) -> Result<Uuid, ApiError> {
        self.session().map(|c| c.sub)
    }

    /// Who holds the credential, as idempotency keys are scoped: `user:<id>` or `api_key:<id>`.
    pub fn credential_scope(&self) -> String {
        match &self.credential {
            Credential::Session(claims) => format!("user:{}", claims.sub),
            Credential::ApiKey(id) => format!("api_key:{id}"),
        }
    }

    /// The principal of a verified token, for this request: its permissions resolved once.
    pub fn from_claims(
        claims: Claims,
        roles: &RoleDirectory,
        request_id: Option<String>,
        client_ip: Option<String>,
    ) -> Self {
        let actor = Actor::user(claims.sub, roles.permissions(claims.acc, &claims.roles));
        let ctx = context(claims.acc, actor, request_id, client_ip);
        Self { credential: Credential::Session(claims), ctx }
    }

    /// The principal of an API key, for this request.
    pub fn from_key(key: KeyHolder, request_id: Option<String>, client_ip: Option<String>) -> Self {
        let actor = Actor::api_key(key.api_key_id, key.permissions);
        let ctx = context(key.account_id, actor, request_id, client_ip);
        Self { credential: Credential::ApiKey(key.api_key_id), ctx }
    }

    /// The principal of a bearer credential: an API key (`pk_...`) or an access token.
    pub async fn authenticate(
        state: &AppState,
        credential: &str,
        request_id: Option<String>,
        client_ip: Option<String>,
    ) -> Result<Self, ApiError> {
        if credential.starts_with(API_KEY_PREFIX) {
            let key = state.live.api_keys.authenticate(credential).await?;
            return Ok(Self::from_key(key, request_id, client_ip));
        }
        let claims = state.jwt.verify(credential)?;
        if state.live.revocations.is_revoked(claims.sid) {
            return Err(ApiError::new(super::error::Code::Unauthorized, "the session has ended"));
        }
        if state.live.revocations.roles_changed_since(claims.sub, claims.rv) {
            return Err(ApiError::new(
                super::error::Code::Unauthorized,
                "your roles changed: refresh your token",
            ));
        }
        Ok(Self::from_claims(claims, &state.live.roles, request_id, client_ip))
    }
}

impl From<KeyRefused> for ApiError {
    fn from(refused: KeyRefused) -> Self {
        match refused {
            KeyRefused::Lookup(e) => e.into(),
            refused => ApiError::new(super::error::Code::Unauthorized, refused.to_string()),
        }
    }
}

fn context(
    account_id: Uuid,
    actor: Actor,
    request_id: Option<String>,
    client_ip: Option<String>,
) -> CommandContext {
    let mut ctx = CommandContext::new(account_id, actor);
    ctx.correlation_id = request_id.as_deref().and_then(|r| r.parse().ok()).unwrap_or(ctx.correlation_id);
    ctx.request_id = request_id;
    ctx.client_ip = client_ip;
    ctx
}

/// The request id (set by the request-id layer) and the client address.
pub fn origin(parts: &Parts) -> (Option<String>, Option<String>) {
    let request_id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let client_ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
    (request_id, client_ip)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Resolved (and counted) once already by the per-credential limit's layer.
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let header =
            parts.headers.get(axum::http::header::AUTHORIZATION).ok_or_else(ApiError::unauthorized)?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        let (request_id, client_ip) = origin(parts);
        Principal::authenticate(state, token, request_id, client_ip).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_token_is_refused_once_it_expires() {
        let keys = JwtKeys::new(b"secret");
        let (token, _) = keys
            .issue(Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), &["owner".into()], 1, LogCursor::default())
            .unwrap();
        let mut claims = keys.verify(&token).unwrap();
        assert_eq!(keys.verified.read().unwrap().len(), 1, "a valid token is remembered");
        // The same text, remembered with an expiry in the past: it must be checked again (and
        // its signature then decides; a stale entry grants nothing).
        claims.exp = Utc::now().timestamp() - 60;
        keys.verified.write().unwrap().insert("not-a-token".into(), claims);
        assert!(keys.verify("not-a-token").is_err());
        assert!(keys.verify(&token).is_ok());
    }
}
