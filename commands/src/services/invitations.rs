//! Invitations: a token shown once, stored hashed, valid for seven days.

use chrono::{DateTime, Duration, Utc};
use parley_aggregates::invitation::{Invitation, InvitationCommand};
use parley_aggregates::permissions::Permission;
use parley_aggregates::values::Email;
use parley_eventstore::LogCursor;
use uuid::Uuid;

use super::roles::grantable_roles;
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
    /// Invites `email` to the caller's account with `role`: a system role by name, or a custom
    /// role by name or id (held by id). Only a role whose permissions the inviter holds can be
    /// given, so only holders of `account.manage` invite owners.
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
        if role.trim().is_empty() {
            return Err(DispatchError::Invalid { field: "role", message: "is required".into() });
        }
        let invitation_id = Uuid::now_v7();
        let token = tokens::generate();
        let expires_at = Utc::now() + Duration::days(INVITATION_TTL_DAYS);
        let (token_hash, account_id, given) = (tokens::hash(&token), ctx.account_id, [role.to_owned()]);
        let done = self
            .dispatcher
            .transact(ctx, None, |uow| {
                let (email, token_hash, given) = (email.clone(), token_hash.clone(), given.clone());
                Box::pin(async move {
                    let role = grantable_roles(uow, &given, &[]).await.map_err(|e| match e {
                        DispatchError::Invalid { message, .. } => {
                            DispatchError::Invalid { field: "role", message }
                        }
                        other => other,
                    })?;
                    let role = role.into_iter().next().unwrap_or_default();
                    let create = InvitationCommand::Create {
                        invitation_id,
                        account_id,
                        email,
                        role: role.clone(),
                        token_hash,
                        invited_by,
                        expires_at,
                    };
                    uow.execute::<Invitation>(&invitation_id.to_string(), create).await?;
                    Ok((role, uow.last_cursor()))
                })
            })
            .await?
            .fresh()?;
        Ok(InvitationIssued {
            invitation_id,
            email: email.as_str().to_owned(),
            role: done.0,
            token,
            expires_at,
            cursor: done.1.unwrap_or_default(),
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
