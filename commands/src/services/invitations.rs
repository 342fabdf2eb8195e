//! Invitations: a token shown once, stored hashed, valid for seven days.

use chrono::{DateTime, Duration, Utc};
use parley_aggregates::invitation::{Invitation, InvitationCommand};
use parley_aggregates::permissions::{system_role, Permission, OWNER};
use parley_aggregates::values::Email;
use parley_eventstore::LogCursor;
use uuid::Uuid;

use super::{field, Commands};
use crate::context::CommandContext;
use crate::error::DispatchError;
use crate::tokens;

pub const INVITATION_TTL_DAYS: i64 = 7;

/// A new invitation, with its token: the only time the token is shown.
#[derive(Clone, Debug, PartialEq)]
pub struct InvitationIssued {
    pub invitation_id: Uuid,
    pub email: String,
    pub role: String,
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub cursor: LogCursor,
}

impl Commands {
    /// Invites `email` to the caller's account with `role` (a system role; only holders of
    /// `account.manage` may invite owners).
    #[tracing::instrument(skip_all)]
    pub async fn invite(
        &self,
        ctx: &CommandContext,
        email: &str,
        role: &str,
    ) -> Result<InvitationIssued, DispatchError> {
        ctx.require(Permission::UsersInvite)?;
        let invited_by = ctx.actor_id()?;
        let email = field("email", Email::parse(email))?;
        if system_role(role).is_none() {
            return Err(DispatchError::Invalid { field: "role", message: "is not a known role".into() });
        }
        if role == OWNER {
            ctx.require(Permission::AccountManage)?;
        }
        let invitation_id = Uuid::now_v7();
        let token = tokens::generate();
        let expires_at = Utc::now() + Duration::days(INVITATION_TTL_DAYS);
        let create = InvitationCommand::Create {
            invitation_id,
            account_id: ctx.account_id,
            email: email.clone(),
            role: role.to_owned(),
            token_hash: tokens::hash(&token),
            invited_by,
            expires_at,
        };
        let done = self.dispatcher.execute::<Invitation>(ctx, &invitation_id.to_string(), create).await?;
        Ok(InvitationIssued {
            invitation_id,
            email: email.as_str().to_owned(),
            role: role.to_owned(),
            token,
            expires_at,
            cursor: done.cursor.unwrap_or_default(),
        })
    }
}

impl Commands {
    /// Revokes a pending invitation of the caller's account.
    #[tracing::instrument(skip_all)]
    pub async fn revoke_invitation(
        &self,
        ctx: &CommandContext,
        invitation_id: Uuid,
    ) -> Result<LogCursor, DispatchError> {
        ctx.require(Permission::UsersInvite)?;
        let revoked_by = ctx.actor_id()?;
        let revoke = InvitationCommand::Revoke { revoked_by };
        let done = self.dispatcher.execute::<Invitation>(ctx, &invitation_id.to_string(), revoke).await?;
        Ok(done.cursor.unwrap_or_default())
    }
}
