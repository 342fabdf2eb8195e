//! Access tokens: short-lived HS256 JWTs carrying user, account, session, roles and the log
//! position the session started at. The secret comes from `PARLEY_JWT_SECRET`, or is generated
//! once and kept in the database so restarts and other nodes accept the same tokens.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parley_commands::{Actor, CommandContext};
use parley_eventstore::LogCursor;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::error::ApiError;
use super::roles::RoleDirectory;
use super::state::AppState;

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

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_nbf = true;
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "nbf", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
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
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::internal(&e))?;
        Ok((token, ACCESS_TTL))
    }

    /// The claims of a valid, unexpired access token signed with our key (HS256 only: `none`
    /// and every other algorithm are refused).
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| ApiError::new(super::error::Code::Unauthorized, "invalid or expired token"))?;
        if data.claims.typ != ACCESS {
            return Err(ApiError::new(super::error::Code::Unauthorized, "not an access token"));
        }
        Ok(data.claims)
    }
}

/// The JWT secret: `PARLEY_JWT_SECRET`, else the one kept in `settings`, created at first start.
pub async fn load_secret(pool: &PgPool, configured: Option<&str>) -> Result<Vec<u8>, sqlx::Error> {
    if let Some(secret) = configured.filter(|s| !s.is_empty()) {
        return Ok(secret.as_bytes().to_vec());
    }
    let mut bytes = [0u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    sqlx::query("INSERT INTO settings (key, value) VALUES ('jwt_secret', $1) ON CONFLICT (key) DO NOTHING")
        .bind(URL_SAFE_NO_PAD.encode(bytes))
        .execute(pool)
        .await?;
    let (secret,): (String,) =
        sqlx::query_as("SELECT value FROM settings WHERE key = 'jwt_secret'").fetch_one(pool).await?;
    Ok(secret.into_bytes())
}

/// The authenticated caller: verified token claims and the command context they grant.
pub struct Principal {
    pub claims: Claims,
    pub ctx: CommandContext,
}

impl Principal {
    pub fn user_id(&self) -> Uuid {
        self.claims.sub
    }

    pub fn account_id(&self) -> Uuid {
        self.claims.acc
    }

    pub fn session_position(&self) -> Option<LogCursor> {
        self.claims.pos.parse().ok()
    }

    /// The principal of a verified token, for this request: its permissions resolved once.
    pub fn from_claims(
        claims: Claims,
        roles: &RoleDirectory,
        request_id: Option<String>,
        client_ip: Option<String>,
    ) -> Self {
        let actor = Actor::user(claims.sub, roles.permissions(claims.acc, &claims.roles));
        let mut ctx = CommandContext::new(claims.acc, actor);
        ctx.correlation_id = request_id.as_deref().and_then(|r| r.parse().ok()).unwrap_or(ctx.correlation_id);
        ctx.request_id = request_id;
        ctx.client_ip = client_ip;
        Self { claims, ctx }
    }
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
        let header =
            parts.headers.get(axum::http::header::AUTHORIZATION).ok_or_else(ApiError::unauthorized)?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        let claims = state.jwt.verify(token)?;
        if state.revocations.is_revoked(claims.sid) {
            return Err(ApiError::new(super::error::Code::Unauthorized, "the session has ended"));
        }
        if state.revocations.roles_changed_since(claims.sub, claims.rv) {
            return Err(ApiError::new(
                super::error::Code::Unauthorized,
                "your roles changed: refresh your token",
            ));
        }
        let (request_id, client_ip) = origin(parts);
        Ok(Principal::from_claims(claims, &state.roles, request_id, client_ip))
    }
}
