//! Sessions: started at login, ended at logout or revocation. Their events tell every node to
//! accept or refuse the session's tokens.

use chrono::{DateTime, Duration, Utc};
use parley_aggregates::session::{Session, SessionCommand};
use parley_eventstore::LogCursor;
use uuid::Uuid;

use super::Commands;
use crate::context::CommandContext;
use crate::error::DispatchError;
use crate::tokens;

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
