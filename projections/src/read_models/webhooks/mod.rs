//! Webhook subscriptions and incoming hooks of an account, for listing: never a secret (the log
//! has none, only fingerprints).

use async_trait::async_trait;
use parley_aggregates::webhook::{IncomingWebhookEvent, WebhookSubscriptionEvent};
use parley_eventstore::RecordedEvent;
use sqlx::PgConnection;

use super::decode;
use crate::error::ProjectionError;
use crate::projection::{Decisions, Projection};
use crate::reads::ReadModel;

pub mod query;

pub struct WebhooksProjection;

const HANDLES: &[&str] = &[
    "WebhookSubscriptionCreated",
    "WebhookSubscriptionUpdated",
    "WebhookSecretRotated",
    "WebhookSubscriptionDisabled",
    "WebhookSubscriptionEnabled",
    "WebhookSubscriptionDeleted",
    "IncomingWebhookCreated",
    "IncomingWebhookDeleted",
];

#[async_trait]
impl Projection for WebhooksProjection {
    fn name(&self) -> &'static str {
        ReadModel::Webhooks.name()
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["webhook_subscriptions", "incoming_webhooks"]
    }

    fn schema(&self) -> &'static str {
        r#"
        CREATE TABLE webhook_subscriptions (
            id                 uuid PRIMARY KEY,
            account_id         uuid NOT NULL,
            url                text NOT NULL,
            event_types        text[] NOT NULL,
            description        text,
            enabled            boolean NOT NULL,
            disabled_reason    text,
            secret_fingerprint text NOT NULL,
            created_by         uuid NOT NULL,
            created_at         timestamptz NOT NULL,
            updated_at         timestamptz NOT NULL,
            version            bigint NOT NULL
        );
        CREATE INDEX webhook_subscriptions_account_idx ON webhook_subscriptions (account_id, created_at DESC, id);
        CREATE TABLE incoming_webhooks (
            id              uuid PRIMARY KEY,
            account_id      uuid NOT NULL,
            conversation_id uuid NOT NULL,
            name            text NOT NULL,
            created_by      uuid NOT NULL,
            created_at      timestamptz NOT NULL,
            version         bigint NOT NULL
        );
        CREATE INDEX incoming_webhooks_account_idx ON incoming_webhooks (account_id, created_at DESC, id);
        "#
    }

    /// The account's listings are queries'; a batch finds each row by id.
    fn deferred_indexes(&self) -> &'static [&'static str] {
        &["webhook_subscriptions_account_idx", "incoming_webhooks_account_idx"]
    }

    fn decides(&self) -> Decisions {
        Decisions {
            handles: HANDLES,
            ignores: &[],
            ignores_streams: &[
                "Account",
                "User",
                "Session",
                "Invitation",
                "Conversation",
                "Role",
                "ApiKey",
                "Inbox",
                "Call",
                "AnalyticsDay",
                "Space",
                "Experience",
                "Stream",
                "AccessGrant",
            ],
        }
    }

    async fn apply(&self, conn: &mut PgConnection, events: &[&RecordedEvent]) -> Result<(), ProjectionError> {
        for e in events {
            if e.stream_type == "IncomingWebhook" {
                apply_hook(conn, e, decode::<IncomingWebhookEvent>(e)?).await?;
                continue;
            }
            use WebhookSubscriptionEvent as E;
            match decode::<WebhookSubscriptionEvent>(e)? {
                E::WebhookSubscriptionCreated {
                    subscription_id,
                    account_id,
                    url,
                    event_types,
                    description,
                    secret_fingerprint,
                    created_by,
                } => {
                    sqlx::query(
                        "INSERT INTO webhook_subscriptions (id, account_id, url, event_types, description, enabled, \
                           secret_fingerprint, created_by, created_at, updated_at, version) \
                         VALUES ($1, $2, $3, $4, $5, true, $6, $7, $8, $8, $9)",
                    )
                    .bind(subscription_id)
                    .bind(account_id)
                    .bind(url)
                    .bind(&event_types)
                    .bind(description)
                    .bind(secret_fingerprint)
                    .bind(created_by)
                    .bind(e.recorded_at)
                    .bind(e.version)
                    .execute(&mut *conn)
                    .await?;
                }
                E::WebhookSubscriptionUpdated { subscription_id, url, event_types, description, .. } => {
                    sqlx::query(
                        "UPDATE webhook_subscriptions SET url = $2, event_types = $3, description = $4, \
                           updated_at = $5, version = $6 WHERE id = $1",
                    )
                    .bind(subscription_id)
                    .bind(url)
                    .bind(&event_types)
                    .bind(description)
                    .bind(e.recorded_at)
                    .bind(e.version)
                    .execute(&mut *conn)
                    .await?;
                }
                E::WebhookSecretRotated { subscription_id, secret_fingerprint, .. } => {
                    sqlx::query(
                        "UPDATE webhook_subscriptions SET secret_fingerprint = $2, updated_at = $3, version = $4 \
                         WHERE id = $1",
                    )
                    .bind(subscription_id)
                    .bind(secret_fingerprint)
                    .bind(e.recorded_at)
                    .bind(e.version)
                    .execute(&mut *conn)
                    .await?;
                }
                E::WebhookSubscriptionDisabled { subscription_id, reason, .. } => {
                    toggle(conn, e, subscription_id, false, Some(reason)).await?;
                }
                E::WebhookSubscriptionEnabled { subscription_id, .. } => {
                    toggle(conn, e, subscription_id, true, None).await?;
                }
                E::WebhookSubscriptionDeleted { subscription_id, .. } => {
                    sqlx::query("DELETE FROM webhook_subscriptions WHERE id = $1")
                        .bind(subscription_id)
                        .execute(&mut *conn)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

async fn toggle(
    conn: &mut PgConnection,
    e: &RecordedEvent,
    id: uuid::Uuid,
    enabled: bool,
    reason: Option<String>,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "UPDATE webhook_subscriptions SET enabled = $2, disabled_reason = $3, updated_at = $4, version = $5 \
         WHERE id = $1",
    )
    .bind(id)
    .bind(enabled)
    .bind(reason)
    .bind(e.recorded_at)
    .bind(e.version)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn apply_hook(
    conn: &mut PgConnection,
    e: &RecordedEvent,
    event: IncomingWebhookEvent,
) -> Result<(), ProjectionError> {
    match event {
        IncomingWebhookEvent::IncomingWebhookCreated {
            hook_id,
            account_id,
            conversation_id,
            name,
            created_by,
            ..
        } => {
            sqlx::query(
                "INSERT INTO incoming_webhooks (id, account_id, conversation_id, name, created_by, created_at, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(hook_id)
            .bind(account_id)
            .bind(conversation_id)
            .bind(name)
            .bind(created_by)
            .bind(e.recorded_at)
            .bind(e.version)
            .execute(&mut *conn)
            .await?;
        }
        IncomingWebhookEvent::IncomingWebhookDeleted { hook_id, .. } => {
            sqlx::query("DELETE FROM incoming_webhooks WHERE id = $1")
                .bind(hook_id)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}
