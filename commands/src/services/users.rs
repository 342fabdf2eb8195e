//! Managing the users of an account.

use parley_aggregates::permissions::Permission;
use parley_aggregates::session::{Session, SessionCommand, SessionError};
use parley_aggregates::user::{User, UserCommand};
use parley_aggregates::DomainError;
use parley_eventstore::{LogCursor, StreamKey};
use uuid::Uuid;

use super::Commands;
use crate::context::CommandContext;
use crate::error::DispatchError;

/// The reason sessions end when their user is deactivated.
pub const USER_DEACTIVATED: &str = "user_deactivated";

/// A deactivation: where it landed, and the sessions it ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Deactivated {
    pub cursor: LogCursor,
    pub ended_sessions: Vec<Uuid>,
}

impl Commands {
    /// Deactivates a user of the caller's account and ends all their sessions, in one
    /// transaction: from its commit on, login and refresh are refused and their tokens rejected.
    #[tracing::instrument(skip_all)]
    pub async fn deactivate_user(
        &self,
        ctx: &CommandContext,
        user_id: Uuid,
    ) -> Result<Deactivated, DispatchError> {
        ctx.require(Permission::UsersManage)?;
        let by = ctx.user_id()?;
        let account_id = ctx.account_id;
        let done = self
            .dispatcher
            .transact(ctx, None, move |uow| {
                Box::pin(async move {
                    let sessions: Vec<(Uuid,)> = sqlx::query_as(
                        "SELECT DISTINCT session_id FROM session_tokens WHERE user_id = $1 AND account_id = $2",
                    )
                    .bind(user_id)
                    .bind(account_id)
                    .fetch_all(uow.conn())
                    .await?;
                    let mut streams = vec![StreamKey::new("User", user_id.to_string())];
                    streams.extend(sessions.iter().map(|(s,)| StreamKey::new("Session", s.to_string())));
                    uow.lock(&streams).await?;
                    uow.execute::<User>(&user_id.to_string(), UserCommand::Deactivate { by }).await?;
                    let mut ended = Vec::new();
                    for (session,) in sessions {
                        let end = SessionCommand::End { reason: USER_DEACTIVATED.into() };
                        match uow.execute::<Session>(&session.to_string(), end).await {
                            Ok(_) => ended.push(session),
                            // Already over (logout, expiry of its refresh token, reuse): nothing to end.
                            Err(DispatchError::Domain(DomainError::Session(SessionError::NotActive))) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Ok((ended, uow.last_cursor()))
                })
            })
            .await?;
        let (ended_sessions, cursor) = done.fresh()?;
        Ok(Deactivated { cursor: cursor.unwrap_or_default(), ended_sessions })
    }
}
