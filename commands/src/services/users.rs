//! Managing the users of an account.

use parley_aggregates::account::{Account, AccountCommand};
use parley_aggregates::permissions::{Permission, OWNER};

use crate::services::roles::grantable_roles;
use parley_aggregates::session::{Session, SessionCommand, SessionError};
use parley_aggregates::user::{User, UserCommand};
use parley_aggregates::values::Name;
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
        let by = ctx.actor_id()?;
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
                    streams.push(StreamKey::new("Account", account_id.to_string()));
                    uow.lock(&streams).await?;
                    let done = uow.execute::<User>(&user_id.to_string(), UserCommand::Deactivate { by }).await?;
                    if done.aggregate.roles.iter().any(|r| r == OWNER) {
                        let leave = AccountCommand::SetOwner { user_id, owner: false };
                        uow.execute::<Account>(&account_id.to_string(), leave).await?;
                    }
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

/// A role change: where it landed and the user's stream version from which tokens are current.
#[derive(Clone, Debug, PartialEq)]
pub struct RolesAssigned {
    pub roles: Vec<String>,
    pub cursor: Option<LogCursor>,
    pub user_version: i64,
}

impl Commands {
    /// Replaces a user's roles. Only holders of `account.manage` make or unmake owners, and the
    /// last owner of an account stays one.
    #[tracing::instrument(skip_all)]
    pub async fn assign_roles(
        &self,
        ctx: &CommandContext,
        user_id: Uuid,
        roles: Vec<String>,
    ) -> Result<RolesAssigned, DispatchError> {
        ctx.require(Permission::UsersManage)?;
        let by = ctx.actor_id()?;
        let account_id = ctx.account_id;
        let can_manage_account = ctx.actor.can(Permission::AccountManage);
        let done = self
            .dispatcher
            .transact(ctx, None, move |uow| {
                let roles = roles.clone();
                Box::pin(async move {
                    let streams = [
                        StreamKey::new("Account", account_id.to_string()),
                        StreamKey::new("User", user_id.to_string()),
                    ];
                    uow.lock(&streams).await?;
                    let (user, _) = uow.load::<User>(&user_id.to_string()).await?;
                    // System roles by name, custom roles (named or by id) by their id.
                    let roles = grantable_roles(uow, &roles, &user.roles).await?;
                    let was_owner = user.roles.iter().any(|r| r == OWNER);
                    let is_owner = roles.iter().any(|r| r == OWNER);
                    if was_owner != is_owner && !can_manage_account {
                        return Err(DispatchError::Forbidden("missing permission account.manage".into()));
                    }
                    let done = uow
                        .execute::<User>(&user_id.to_string(), UserCommand::AssignRoles { roles, by })
                        .await?;
                    if was_owner != is_owner {
                        let set = AccountCommand::SetOwner { user_id, owner: is_owner };
                        uow.execute::<Account>(&account_id.to_string(), set).await?;
                    }
                    Ok(RolesAssigned {
                        roles: done.aggregate.roles,
                        cursor: uow.last_cursor(),
                        user_version: done.version,
                    })
                })
            })
            .await?;
        done.fresh()
    }
}

/// Profile fields to change: `None` leaves a field alone, `Some(None)` clears an optional one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProfileChanges {
    pub name: Option<String>,
    pub display_name: Option<Option<String>>,
    pub avatar_url: Option<Option<String>>,
    pub bio: Option<Option<String>>,
}

/// A profile after an update, and its version (the resource's ETag).
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileUpdated {
    pub user: User,
    pub version: i64,
    pub cursor: Option<LogCursor>,
}

fn bounded(field: &'static str, value: &Option<Option<String>>, max: usize) -> Result<(), DispatchError> {
    match value {
        Some(Some(v)) if v.chars().count() > max => {
            Err(DispatchError::Invalid { field, message: format!("must be at most {max} characters") })
        }
        _ => Ok(()),
    }
}

impl Commands {
    /// Changes a profile: one's own, or anyone's in the account with `users.manage`. With
    /// `expected_version` (from `If-Match`), a profile changed meanwhile is refused.
    #[tracing::instrument(skip_all)]
    pub async fn update_profile(
        &self,
        ctx: &CommandContext,
        user_id: Uuid,
        changes: ProfileChanges,
        expected_version: Option<i64>,
    ) -> Result<ProfileUpdated, DispatchError> {
        let by = ctx.actor_id()?;
        if by != user_id {
            ctx.require(Permission::UsersManage)?;
        }
        let name = match changes.name.as_deref() {
            Some(n) => Some(
                Name::parse(n)
                    .map_err(|e| DispatchError::Invalid { field: "name", message: e.to_string() })?,
            ),
            None => None,
        };
        bounded("display_name", &changes.display_name, Name::MAX)?;
        bounded("bio", &changes.bio, 2000)?;
        bounded("avatar_url", &changes.avatar_url, 2048)?;
        if let Some(Some(url)) = &changes.avatar_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(DispatchError::Invalid {
                    field: "avatar_url",
                    message: "must be an http(s) URL".into(),
                });
            }
        }
        let update = UserCommand::UpdateProfile {
            by,
            name,
            display_name: changes.display_name,
            avatar_url: changes.avatar_url,
            bio: changes.bio,
        };
        let done = self
            .dispatcher
            .execute_expecting::<User>(ctx, &user_id.to_string(), update, expected_version)
            .await?;
        Ok(ProfileUpdated { user: done.aggregate, version: done.version, cursor: done.cursor })
    }
}

impl Commands {
    /// Changes one's own password: the current one must be given, and the new one may not be
    /// any of the last five. All hashing happens before the write transaction.
    #[tracing::instrument(skip_all)]
    pub async fn change_password(
        &self,
        ctx: &CommandContext,
        user_id: Uuid,
        current_password: &str,
        new_password: &str,
    ) -> Result<LogCursor, DispatchError> {
        let me = ctx.user_id()?;
        // Another account's user does not exist for the caller: 404 before any 403.
        let user = self.dispatcher.load::<User>(&user_id.to_string()).await?;
        let user =
            user.filter(|l| l.account_id == ctx.account_id).ok_or(DispatchError::NotFound("user"))?.aggregate;
        if me != user_id {
            return Err(DispatchError::Forbidden("you can only change your own password".into()));
        }
        if !self.passwords.verify(current_password, &user.password_hash).await {
            return Err(DispatchError::Invalid { field: "current_password", message: "is incorrect".into() });
        }
        for previous in &user.password_history {
            if self.passwords.verify(new_password, previous).await {
                return Err(DispatchError::Invalid {
                    field: "new_password",
                    message: "was used recently".into(),
                });
            }
        }
        let password_hash = self
            .passwords
            .hash(new_password)
            .await
            .map_err(|e| DispatchError::Invalid { field: "new_password", message: e.to_string() })?;
        let done = self
            .dispatcher
            .execute::<User>(ctx, &user_id.to_string(), UserCommand::ChangePassword { password_hash })
            .await?;
        Ok(done.cursor.unwrap_or_default())
    }
}
