//! API keys: credentials for programs, each with its own permissions (never more than its
//! creator holds). The secret is shown once; the log and the write side keep only its hash.

use chrono::{DateTime, Utc};
use parley_aggregates::api_key::{ApiKey, ApiKeyCommand};
use parley_aggregates::permissions::Permission;
use parley_aggregates::values::Name;
use uuid::Uuid;

use super::{field, grantable, Commands};
use crate::context::{Actor, CommandContext};
use crate::dispatcher::Loaded;
use crate::error::DispatchError;
use crate::tokens;
use crate::unit_of_work::Executed;

/// Every API key secret starts with this, so a bearer token says what it is.
pub const API_KEY_PREFIX: &str = "pk_";
/// How much of the secret stays visible: the marker and 8 characters.
const VISIBLE: usize = API_KEY_PREFIX.len() + 8;

/// A new key, with its secret: the only time the secret is shown.
#[derive(Debug)]
pub struct ApiKeyIssued {
    pub key: Executed<ApiKey>,
    pub secret: String,
}

impl Commands {
    /// Creates a key of the caller's account that can do what `permissions` allow, until
    /// `expires_at` (if given, in the future) or until it is revoked.
    #[tracing::instrument(skip_all)]
    pub async fn create_api_key(
        &self,
        ctx: &CommandContext,
        name: &str,
        permissions: &[String],
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<ApiKeyIssued, DispatchError> {
        ctx.require(Permission::ApiKeysManage)?;
        let by = ctx.actor_id()?;
        let name = field("name", Name::parse(name))?;
        let permissions = grantable(ctx, permissions)?;
        if expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(DispatchError::Invalid {
                field: "expires_at",
                message: "must be in the future".into(),
            });
        }
        let secret = format!("{API_KEY_PREFIX}{}", tokens::generate());
        let api_key_id = Uuid::now_v7();
        let create = ApiKeyCommand::Create {
            api_key_id,
            account_id: ctx.account_id,
            name,
            permissions,
            prefix: secret[..VISIBLE].to_owned(),
            secret_hash: tokens::hash(&secret),
            expires_at,
            by,
        };
        let key = self.dispatcher.execute::<ApiKey>(ctx, &api_key_id.to_string(), create).await?;
        Ok(ApiKeyIssued { key, secret })
    }

    /// Revokes a key of the caller's account: from its commit on, the key authenticates nothing.
    #[tracing::instrument(skip_all)]
    pub async fn revoke_api_key(
        &self,
        ctx: &CommandContext,
        api_key_id: Uuid,
    ) -> Result<Executed<ApiKey>, DispatchError> {
        ctx.require(Permission::ApiKeysManage)?;
        let by = ctx.actor_id()?;
        self.dispatcher.execute::<ApiKey>(ctx, &api_key_id.to_string(), ApiKeyCommand::Revoke { by }).await
    }

    /// Records that the key authenticated a request at `at` (the key is the actor). The
    /// aggregate keeps at most one such event per key per minute.
    #[tracing::instrument(skip_all)]
    pub async fn record_api_key_use(
        &self,
        account_id: Uuid,
        api_key_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Executed<ApiKey>, DispatchError> {
        let ctx = CommandContext::new(account_id, Actor::api_key(api_key_id, Vec::new()));
        let record = ApiKeyCommand::RecordUse { at };
        self.dispatcher.execute::<ApiKey>(&ctx, &api_key_id.to_string(), record).await
    }

    /// The key whose secret hashes to `secret_hash`, read from the write side: for a node that
    /// has not yet learned of the key from the log.
    pub async fn api_key_by_secret_hash(
        &self,
        secret_hash: &str,
    ) -> Result<Option<Loaded<ApiKey>>, DispatchError> {
        let found: Option<(Uuid,)> =
            sqlx::query_as("SELECT api_key_id FROM api_key_facts WHERE secret_hash = $1")
                .bind(secret_hash)
                .fetch_optional(self.dispatcher.store.pool())
                .await?;
        match found {
            Some((id,)) => self.dispatcher.load::<ApiKey>(&id.to_string()).await,
            None => Ok(None),
        }
    }
}
