//! Registration: a new account with its owner, or joining an account through an invitation.

use chrono::Utc;
use parley_aggregates::account::{Account, AccountCommand};
use parley_aggregates::creator::Space;
use parley_aggregates::invitation::{Invitation, InvitationCommand, InvitationError};
use parley_aggregates::permissions::OWNER;
use parley_aggregates::user::{User, UserCommand};
use parley_aggregates::values::{Email, Name};
use parley_eventstore::{LogCursor, StreamKey};
use uuid::Uuid;

use super::{field, Commands};
use crate::context::{Actor, CommandContext};
use crate::creator::Creator;
use crate::dispatcher::with_retry;
use crate::error::DispatchError;
use crate::tokens;

/// What a person sends to register.
#[derive(Clone, Debug, Default)]
pub struct Registration {
    pub name: String,
    pub email: String,
    pub password: String,
    pub account_name: Option<String>,
    pub invitation_token: Option<String>,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
}

/// A registered user and where the registration landed in the log.
#[derive(Clone, Debug, PartialEq)]
pub struct Registered {
    pub user_id: Uuid,
    pub account_id: Uuid,
    pub account_name: String,
    pub name: String,
    pub email: String,
    pub roles: Vec<String>,
    pub cursor: LogCursor,
}

impl Commands {
    /// Registers a user. Without an invitation a new account is opened with the user as owner;
    /// with one, the user joins the inviting account with the invited role (same email only).
    /// The password is hashed before the transaction begins.
    #[tracing::instrument(skip_all)]
    pub async fn register(&self, r: Registration) -> Result<Registered, DispatchError> {
        let name = field("name", Name::parse(&r.name))?;
        let email = field("email", Email::parse(&r.email))?;
        let password_hash = self
            .passwords
            .hash(&r.password)
            .await
            .map_err(|e| DispatchError::Invalid { field: "password", message: e.to_string() })?;
        let user_id = Uuid::now_v7();
        match r.invitation_token.as_deref() {
            None => {
                let account_name = match r.account_name.as_deref() {
                    Some(a) => field("account_name", Name::parse(a))?,
                    None => field("account_name", Name::parse(&format!("{}'s account", name.as_str())))?,
                };
                self.open_account(&r, user_id, name, email, password_hash, account_name).await
            }
            Some(token) => self.join_account(&r, token, user_id, name, email, password_hash).await,
        }
    }

    async fn open_account(
        &self,
        r: &Registration,
        user_id: Uuid,
        name: Name,
        email: Email,
        password_hash: String,
        account_name: Name,
    ) -> Result<Registered, DispatchError> {
        let account_id = Uuid::now_v7();
        let ctx = origin(r, account_id, user_id);
        let (account_key, user_key) = (account_id.to_string(), user_id.to_string());
        let cursor = with_retry(|| async {
            let mut uow = self.dispatcher.begin(&ctx).await?;
            // Every account has its primary space from the start: inside this answer's position.
            let (space_key, open_space) = Creator::primary_space_command(account_id, user_id);
            uow.lock(&[
                StreamKey::new("Account", &account_key),
                StreamKey::new("User", &user_key),
                StreamKey::new("Space", &space_key),
            ])
            .await?;
            let open = AccountCommand::Open { account_id, name: account_name.clone(), owner_id: user_id };
            uow.execute::<Account>(&account_key, open).await?;
            uow.execute::<Space>(&space_key, open_space).await?;
            let register = UserCommand::Register {
                user_id,
                account_id,
                name: name.clone(),
                email: email.clone(),
                password_hash: password_hash.clone(),
                roles: vec![OWNER.into()],
                invitation_id: None,
            };
            uow.execute::<User>(&user_key, register).await?;
            uow.commit().await
        })
        .await?;
        Ok(Registered {
            user_id,
            account_id,
            account_name: account_name.as_str().to_owned(),
            name: name.as_str().to_owned(),
            email: email.as_str().to_owned(),
            roles: vec![OWNER.into()],
            cursor: cursor.unwrap_or_default(),
        })
    }

    async fn join_account(
        &self,
        r: &Registration,
        token: &str,
        user_id: Uuid,
        name: Name,
        email: Email,
        password_hash: String,
    ) -> Result<Registered, DispatchError> {
        let invalid = || DispatchError::Domain(InvitationError::NotFound.into());
        let found: Option<(Uuid, Uuid)> =
            sqlx::query_as("SELECT invitation_id, account_id FROM invitation_facts WHERE token_hash = $1")
                .bind(tokens::hash(token))
                .fetch_optional(self.dispatcher.store().pool())
                .await?;
        let (invitation_id, account_id) = found.ok_or_else(invalid)?;
        let ctx = origin(r, account_id, user_id);
        let (invitation_key, user_key) = (invitation_id.to_string(), user_id.to_string());
        let (role, cursor, account_name) = with_retry(|| async {
            let mut uow = self.dispatcher.begin(&ctx).await?;
            let account_key = account_id.to_string();
            uow.lock(&[
                StreamKey::new("Invitation", &invitation_key),
                StreamKey::new("User", &user_key),
                StreamKey::new("Account", &account_key),
            ])
            .await?;
            let accept = InvitationCommand::Accept { user_id, email: email.clone(), now: Utc::now() };
            let accepted = uow.execute::<Invitation>(&invitation_key, accept).await?;
            let role = accepted.aggregate.role.clone();
            let register = UserCommand::Register {
                user_id,
                account_id,
                name: name.clone(),
                email: email.clone(),
                password_hash: password_hash.clone(),
                roles: vec![role.clone()],
                invitation_id: Some(invitation_id),
            };
            uow.execute::<User>(&user_key, register).await?;
            if role == OWNER {
                uow.execute::<Account>(&account_key, AccountCommand::SetOwner { user_id, owner: true })
                    .await?;
            }
            let (account, _) = uow.load::<Account>(&account_key).await?;
            let cursor = uow.commit().await?;
            Ok((role, cursor, account.name))
        })
        .await?;
        Ok(Registered {
            user_id,
            account_id,
            account_name,
            name: name.as_str().to_owned(),
            email: email.as_str().to_owned(),
            roles: vec![role],
            cursor: cursor.unwrap_or_default(),
        })
    }
}

/// The context of a registration: the new user acts for themself.
fn origin(r: &Registration, account_id: Uuid, user_id: Uuid) -> CommandContext {
    let mut ctx = CommandContext::new(account_id, Actor::user(user_id, Vec::new()));
    ctx.request_id = r.request_id.clone();
    ctx.client_ip = r.client_ip.clone();
    ctx
}
