//! Incoming hooks: made and deleted by the account, and the signed requests they receive.

use parley_aggregates::conversation::Conversation;
use parley_aggregates::permissions::Permission;
use parley_aggregates::values::Name;
use parley_aggregates::webhook::{IncomingWebhook, IncomingWebhookCommand};
use parley_eventstore::ActorKind;
use parley_jobs::NewJob;
use serde_json::json;
use uuid::Uuid;

use super::incoming::INCOMING;
use super::secrets::{fingerprint, new_secret};
use super::service::Issued;
use super::signing::{verify, VerifyError};
use super::Webhooks;
use crate::context::CommandContext;
use crate::error::DispatchError;
use crate::services::field;
use crate::unit_of_work::Executed;

/// What became of a request to an incoming hook.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// Verified: its message will be posted (or it was a repeat of one that is).
    Accepted,
    /// No such hook (or deleted).
    UnknownHook,
    /// The signature or timestamp did not verify.
    Refused(VerifyError),
}

impl Webhooks {
    /// Makes a hook that posts into `conversation_id` (of the account; a user must be a member).
    #[tracing::instrument(skip_all)]
    pub async fn create_hook(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        name: &str,
    ) -> Result<Issued<IncomingWebhook>, DispatchError> {
        ctx.require(Permission::WebhooksManage)?;
        let by = ctx.actor_id()?;
        let name = field("name", Name::parse(name))?;
        let conversation =
            self.commands.dispatcher().load::<Conversation>(&conversation_id.to_string()).await?;
        let visible = conversation.is_some_and(|c| {
            c.account_id == ctx.account_id && (ctx.actor.kind != ActorKind::User || c.aggregate.is_member(by))
        });
        if !visible {
            return Err(DispatchError::NotFound("conversation"));
        }
        let (secret, hook_id) = (new_secret(), Uuid::now_v7());
        let create = IncomingWebhookCommand::Create {
            hook_id,
            account_id: ctx.account_id,
            conversation_id,
            name,
            secret_fingerprint: fingerprint(&secret),
            by,
        };
        let done = self.with_secret(ctx, hook_id, &secret, create).await?;
        Ok(Issued { done, secret })
    }

    /// Deletes a hook of the account: it receives nothing more.
    #[tracing::instrument(skip_all)]
    pub async fn delete_hook(
        &self,
        ctx: &CommandContext,
        hook_id: Uuid,
    ) -> Result<Executed<IncomingWebhook>, DispatchError> {
        ctx.require(Permission::WebhooksManage)?;
        let by = ctx.actor_id()?;
        let hook = self.commands.dispatcher().load::<IncomingWebhook>(&hook_id.to_string()).await?;
        let ours =
            hook.and_then(|h| h.aggregate.live()).is_some_and(|(account, _)| account == ctx.account_id);
        if !ours {
            return Err(DispatchError::NotFound("incoming webhook"));
        }
        let secrets = self.secrets.clone();
        self.commands
            .dispatcher()
            .transact(ctx, None, move |uow| {
                let secrets = secrets.clone();
                Box::pin(async move {
                    secrets.forget(uow.conn(), hook_id).await?;
                    uow.execute::<IncomingWebhook>(
                        &hook_id.to_string(),
                        IncomingWebhookCommand::Delete { by },
                    )
                    .await
                })
            })
            .await?
            .fresh()
    }

    /// A request to a hook: verified now (constant time, 5-minute window), then handed to a job
    /// that posts its message; the same `webhook-id` twice is one job.
    #[tracing::instrument(skip_all, fields(%hook_id))]
    pub async fn receive(
        &self,
        hook_id: Uuid,
        id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<Received, DispatchError> {
        let hook = self.commands.dispatcher().load::<IncomingWebhook>(&hook_id.to_string()).await?;
        let Some((account_id, _)) = hook.and_then(|h| h.aggregate.live()) else {
            return Ok(Received::UnknownHook);
        };
        let now = self.clock.now();
        let secrets = self.secrets.signing(&self.pool, hook_id, now).await?;
        if let Err(refused) = verify(&secrets, id, timestamp, signature, body, now.timestamp()) {
            metrics::counter!("parley_incoming_webhooks_total", "outcome" => "refused").increment(1);
            return Ok(Received::Refused(refused));
        }
        let webhook_id = id.unwrap_or_default();
        let job = NewJob::new(
            INCOMING,
            json!({"hook_id": hook_id, "webhook_id": webhook_id, "body": String::from_utf8_lossy(body)}),
        )
        .account(account_id)
        .max_attempts(10)
        .unique(format!("{hook_id}:{webhook_id}"), std::time::Duration::from_secs(24 * 3600));
        let mut conn = self.pool.acquire().await?;
        self.queue.enqueue(&mut conn, &job).await?;
        drop(conn);
        self.queue.wake().await;
        metrics::counter!("parley_incoming_webhooks_total", "outcome" => "accepted").increment(1);
        Ok(Received::Accepted)
    }
}
