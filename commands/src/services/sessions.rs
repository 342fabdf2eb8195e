//! Sessions: started at login, ended at logout or revocation. Their events tell every node to
//! accept or refuse the session's tokens.

use chrono::{DateTime, Duration, Utc};
use parley_aggregates::account::Account;
use parley_aggregates::session::{Session, SessionCommand, SessionError, SessionEvent};
use parley_aggregates::user::User;
use parley_aggregates::values::Email;
use parley_aggregates::DomainError;
use parley_eventstore::claims;
use parley_eventstore::LogCursor;
use uuid::Uuid;

use super::Commands;
use crate::context::{Actor, CommandContext};
use crate::error::DispatchError;
use crate::tokens;
use crate::write_side::EMAIL_CLAIM;

/// How long a refresh token lives.
pub const REFRESH_TTL_DAYS: i64 = 30;

#[derive(Clone, Debug, PartialEq)]
pub struct SessionStarted {
    pub session_id: Uuid,
    pub refresh_token: String,
    pub expires_at: DateTime<Utc>,
    pub cursor: LogCursor,
}

impl Commands {
    /// Starts a session for the acting user; the refresh token is shown only here.
    pub async fn start_session(&self, ctx: &CommandContext) -> Result<SessionStarted, DispatchError> {
        let user_id = ctx.user_id()?;
        let session_id = Uuid::now_v7();
        let refresh_token = tokens::generate();
        let expires_at = Utc::now() + Duration::days(REFRESH_TTL_DAYS);
        let start = SessionCommand::Start {
            session_id,
            user_id,
            account_id: ctx.account_id,
            refresh_token_hash: tokens::hash(&refresh_token),
            expires_at,
        };
        let done = self.dispatcher.execute::<Session>(ctx, &session_id.to_string(), start).await?;
        Ok(SessionStarted { session_id, refresh_token, expires_at, cursor: done.cursor.unwrap_or_default() })
    }

    /// Ends a session (logout or revocation).
    pub async fn end_session(
        &self,
        ctx: &CommandContext,
        session_id: Uuid,
        reason: &str,
    ) -> Result<LogCursor, DispatchError> {
        let end = SessionCommand::End { reason: reason.to_owned() };
        let done = self.dispatcher.execute::<Session>(ctx, &session_id.to_string(), end).await?;
        Ok(done.cursor.unwrap_or_default())
    }
}

/// A successful login: who, where, and the new session.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedIn {
    pub user_id: Uuid,
    pub account_id: Uuid,
    pub account_name: String,
    pub name: String,
    pub email: String,
    pub roles: Vec<String>,
    /// The user's stream version: tokens carry it, so a later role change makes them stale.
    pub user_version: i64,
    pub session: SessionStarted,
}

impl Commands {
    /// Checks credentials and starts a session. An unknown email costs the same password
    /// verification as a wrong password and gets the same answer.
    #[tracing::instrument(skip_all)]
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        request_id: Option<String>,
        client_ip: Option<String>,
    ) -> Result<LoggedIn, DispatchError> {
        let user = match Email::parse(email) {
            Ok(email) => {
                let mut conn = self.dispatcher.store().pool().acquire().await?;
                match claims::holder(&mut conn, EMAIL_CLAIM, email.as_str()).await? {
                    Some(holder) => self.dispatcher.load::<User>(&holder.stream_id).await?,
                    None => None,
                }
            }
            Err(_) => None,
        };
        let hash = match &user {
            Some(u) => u.aggregate.password_hash.clone(),
            None => self.dummy_hash().await?,
        };
        let verified = self.passwords.verify(password, &hash).await;
        let (user, user_version) = match user {
            Some(u) if verified && u.aggregate.active => (u.aggregate, u.version),
            _ => return Err(DispatchError::Unauthenticated),
        };
        let (Some(user_id), Some(account_id)) = (user.id, user.account_id) else {
            return Err(DispatchError::Unauthenticated);
        };
        let mut ctx = CommandContext::new(account_id, Actor::user(user_id, Vec::new()));
        ctx.request_id = request_id;
        ctx.client_ip = client_ip;
        let session = self.start_session(&ctx).await?;
        self.logged_in(user, user_version, account_id, session).await
    }

    /// Who signed in, with their account's name and the session.
    async fn logged_in(
        &self,
        user: User,
        user_version: i64,
        account_id: Uuid,
        session: SessionStarted,
    ) -> Result<LoggedIn, DispatchError> {
        let account = self
            .dispatcher
            .load::<Account>(&account_id.to_string())
            .await?
            .map(|l| l.aggregate)
            .unwrap_or_default();
        Ok(LoggedIn {
            user_id: user.id.unwrap_or_default(),
            account_id,
            account_name: account.name,
            name: user.name,
            email: user.email,
            roles: user.roles,
            user_version,
            session,
        })
    }

    /// A hash of the same cost as real ones, verified against for unknown emails.
    async fn dummy_hash(&self) -> Result<String, DispatchError> {
        let passwords = self.passwords.clone();
        self.dummy
            .get_or_try_init(|| async move { passwords.hash("not a password anyone has").await })
            .await
            .cloned()
            .map_err(|e| DispatchError::Invalid { field: "password", message: e.to_string() })
    }
}

impl Commands {
    /// Rotates a refresh token: a new pair for the current one; the session ends (and every
    /// token of it stops working) when an already-rotated one is presented again.
    #[tracing::instrument(skip_all)]
    pub async fn refresh(
        &self,
        refresh_token: &str,
        request_id: Option<String>,
        client_ip: Option<String>,
    ) -> Result<LoggedIn, DispatchError> {
        let presented_hash = tokens::hash(refresh_token);
        let found: Option<(Uuid, Uuid, Uuid)> = sqlx::query_as(
            "SELECT session_id, account_id, user_id FROM session_tokens WHERE token_hash = $1",
        )
        .bind(&presented_hash)
        .fetch_optional(self.dispatcher.store().pool())
        .await?;
        let (session_id, account_id, user_id) = found.ok_or(DispatchError::Unauthenticated)?;
        let loaded = self.dispatcher.load::<User>(&user_id.to_string()).await?;
        let (user, user_version) = loaded
            .filter(|l| l.aggregate.active)
            .map(|l| (l.aggregate, l.version))
            .ok_or(DispatchError::Unauthenticated)?;
        let mut ctx = CommandContext::new(account_id, Actor::user(user_id, Vec::new()));
        ctx.request_id = request_id;
        ctx.client_ip = client_ip;
        let refresh_token = tokens::generate();
        let now = Utc::now();
        let expires_at = now + Duration::days(REFRESH_TTL_DAYS);
        let refresh = SessionCommand::Refresh {
            presented_hash,
            new_hash: tokens::hash(&refresh_token),
            now,
            expires_at,
        };
        let done = match self.dispatcher.execute::<Session>(&ctx, &session_id.to_string(), refresh).await {
            Ok(done) => done,
            Err(DispatchError::Domain(DomainError::Session(
                SessionError::NotActive | SessionError::Expired,
            ))) => return Err(DispatchError::Unauthenticated),
            Err(e) => return Err(e),
        };
        // Reuse ended the session (committed): the caller gets nothing.
        if done.events.iter().any(|e| matches!(e, SessionEvent::SessionEnded { .. })) {
            tracing::warn!(%session_id, "a rotated refresh token was presented again; the session is revoked");
            return Err(DispatchError::SessionRevoked(session_id));
        }
        let session =
            SessionStarted { session_id, refresh_token, expires_at, cursor: done.cursor.unwrap_or_default() };
        self.logged_in(user, user_version, account_id, session).await
    }
}
