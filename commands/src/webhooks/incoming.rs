//! Posting what an incoming webhook received: the job behind `POST /webhooks/incoming/{id}`.
//! The request was verified before the job was enqueued; here the body is read, and a message
//! posted as the hook. A body that cannot be processed (not JSON, no `text`, a text no message
//! could hold, a conversation gone) posts nothing and is not retried.

use async_trait::async_trait;
use parley_aggregates::conversation::{Conversation, ConversationCommand};
use parley_aggregates::values::MessageBody;
use parley_aggregates::webhook::IncomingWebhook;
use parley_jobs::{Failure, Handler, Job};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Webhooks;
use crate::context::{Actor, CommandContext};
use crate::error::DispatchError;

pub const INCOMING: &str = "webhooks.incoming";

/// The message a hook's request posts: the same for the same `webhook-id`, so a job run twice
/// (its node died after posting) posts once.
pub(crate) fn message_id(hook_id: Uuid, webhook_id: &str) -> Uuid {
    let digest =
        Sha256::new().chain_update(hook_id.as_bytes()).chain_update(webhook_id.as_bytes()).finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

pub(crate) struct PostIncoming {
    pub webhooks: Webhooks,
}

#[async_trait]
impl Handler for PostIncoming {
    fn kind(&self) -> &'static str {
        INCOMING
    }

    async fn run(&self, job: &Job) -> Result<(), Failure> {
        let hook_id: Uuid = job.args["hook_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Failure::new("no hook_id in the job's arguments"))?;
        let webhook_id = job.args["webhook_id"].as_str().unwrap_or_default();
        let body = job.args["body"].as_str().unwrap_or_default();
        let Some(text) = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned))
        else {
            tracing::info!(%hook_id, webhook_id, "incoming webhook body has no text; nothing posted");
            return Ok(());
        };
        let Ok(text) = MessageBody::parse(&text) else {
            tracing::info!(%hook_id, webhook_id, "incoming webhook text is not a message body; nothing posted");
            return Ok(());
        };
        let dispatcher = self.webhooks.commands.dispatcher();
        let hook =
            dispatcher.load::<IncomingWebhook>(&hook_id.to_string()).await.map_err(|e| e.to_string())?;
        let Some((account_id, conversation_id)) = hook.and_then(|h| h.aggregate.live()) else {
            return Ok(());
        };
        let message_id = message_id(hook_id, webhook_id);
        let posted: Option<(Uuid,)> =
            sqlx::query_as("SELECT message_id FROM message_facts WHERE message_id = $1")
                .bind(message_id)
                .fetch_optional(&self.webhooks.pool)
                .await
                .map_err(|e| e.to_string())?;
        if posted.is_some() {
            return Ok(());
        }
        let mut ctx = CommandContext::new(account_id, Actor::webhook(hook_id));
        ctx.causation_id = job.causation_id;
        let post = ConversationCommand::PostAsWebhook { message_id, hook_id, body: text };
        match dispatcher.execute::<Conversation>(&ctx, &conversation_id.to_string(), post).await {
            Ok(_) => Ok(()),
            Err(DispatchError::Domain(refused)) => {
                tracing::info!(%hook_id, error = %refused, "incoming webhook message refused; nothing posted");
                Ok(())
            }
            Err(e) => Err(Failure::new(e.to_string())),
        }
    }
}
