//! The use cases behind `/webhooks/*`: subscriptions and their secrets, attempts, resends and
//! recoveries; incoming hooks and what they receive.

use chrono::{DateTime, Duration, Utc};
use parley_aggregates::catalog::is_event_type;
use parley_aggregates::permissions::Permission;
use parley_aggregates::webhook::{WebhookSubscription, WebhookSubscriptionCommand};
use parley_jobs::NewJob;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::address::check_url;
use super::fanout::resend_job;
use super::secrets::{fingerprint, new_secret};
use super::Webhooks;
use crate::context::CommandContext;
use crate::error::DispatchError;
use crate::unit_of_work::Executed;
use crate::write_side::WriteSide;

/// How long a rotated-out secret keeps signing.
pub const ROTATION_OVERLAP: Duration = Duration::hours(24);
/// The most events one recovery resends.
pub const MAX_RECOVERED: i64 = 10_000;
const MAX_DESCRIPTION: usize = 500;

/// Something made with a secret, and the secret: the only time it is shown.
#[derive(Debug)]
pub struct Issued<A: cqrs_es::Aggregate> {
    pub done: Executed<A>,
    pub secret: String,
}

/// What a PATCH may change.
#[derive(Debug, Default)]
pub struct SubscriptionChanges {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// One delivery attempt as listed.
#[derive(utoipa::ToSchema, Debug, Serialize, sqlx::FromRow)]
pub struct Attempt {
    pub event_id: Uuid,
    pub attempt: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
    pub at: DateTime<Utc>,
}

fn invalid(field: &'static str, message: impl Into<String>) -> DispatchError {
    DispatchError::Invalid { field, message: message.into() }
}

fn event_types(types: &[String]) -> Result<Vec<String>, DispatchError> {
    if types.is_empty() {
        return Err(invalid("event_types", "must name at least one event type"));
    }
    if let Some(unknown) = types.iter().find(|t| !is_event_type(t)) {
        return Err(invalid("event_types", format!("{unknown:?} is not an event type of the log")));
    }
    Ok(types.to_vec())
}

fn description(text: Option<String>) -> Result<Option<String>, DispatchError> {
    match text {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => {
            Err(invalid("description", format!("must be at most {MAX_DESCRIPTION} characters")))
        }
        other => Ok(other),
    }
}

impl Webhooks {
    /// Keeps `secret` for `owner_id` and runs `command` (which records its fingerprint) on the
    /// owner's stream, in one transaction: the secret exists exactly when its event does.
    pub(super) async fn with_secret<A: WriteSide>(
        &self,
        ctx: &CommandContext,
        owner_id: Uuid,
        secret: &str,
        command: A::Command,
    ) -> Result<Executed<A>, DispatchError> {
        let (secrets, account_id, now) = (self.secrets.clone(), ctx.account_id, self.clock.now());
        let secret = secret.to_owned();
        self.commands
            .dispatcher()
            .transact(ctx, None, move |uow| {
                let (secrets, secret, command) = (secrets.clone(), secret.clone(), command.clone());
                Box::pin(async move {
                    secrets.store(uow.conn(), owner_id, account_id, &secret, now).await?;
                    uow.execute::<A>(&owner_id.to_string(), command).await
                })
            })
            .await?
            .fresh()
    }

    async fn url(&self, url: &str) -> Result<String, DispatchError> {
        check_url(url, self.allow_private)
            .await
            .map(|u| u.to_string())
            .map_err(|e| invalid("url", e.to_string()))
    }

    /// The subscription `id` of the caller's account.
    async fn subscription(
        &self,
        ctx: &CommandContext,
        id: Uuid,
    ) -> Result<WebhookSubscription, DispatchError> {
        let loaded = self.commands.dispatcher().load::<WebhookSubscription>(&id.to_string()).await?;
        match loaded {
            Some(l) if l.aggregate.account_id == Some(ctx.account_id) && !l.aggregate.deleted => {
                Ok(l.aggregate)
            }
            _ => Err(DispatchError::NotFound("webhook subscription")),
        }
    }

    /// Subscribes `url` to the account's events of `types`; the secret is in the answer only.
    #[tracing::instrument(skip_all)]
    pub async fn subscribe(
        &self,
        ctx: &CommandContext,
        url: &str,
        types: &[String],
        text: Option<String>,
    ) -> Result<Issued<WebhookSubscription>, DispatchError> {
        ctx.require(Permission::WebhooksManage)?;
        let by = ctx.actor_id()?;
        let event_types = event_types(types)?;
        let description = description(text)?;
        let url = self.url(url).await?;
        let (secret, subscription_id) = (new_secret(), Uuid::now_v7());
        let create = WebhookSubscriptionCommand::Create {
            subscription_id,
            account_id: ctx.account_id,
            url,
            event_types,
            description,
            secret_fingerprint: fingerprint(&secret),
            by,
        };
        let done = self.with_secret(ctx, subscription_id, &secret, create).await?;
        Ok(Issued { done, secret })
    }

    /// Changes a subscription's URL, types, description or whether it is enabled.
    #[tracing::instrument(skip_all)]
    pub async fn change_subscription(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        changes: SubscriptionChanges,
    ) -> Result<Option<Executed<WebhookSubscription>>, DispatchError> {
        ctx.require(Permission::WebhooksManage)?;
        let by = ctx.actor_id()?;
        self.subscription(ctx, id).await?;
        let event_types = changes.event_types.as_deref().map(event_types).transpose()?;
        let description = description(changes.description)?;
        let url = match changes.url.as_deref() {
            Some(url) => Some(self.url(url).await?),
            None => None,
        };
        let dispatcher = self.commands.dispatcher();
        let stream = id.to_string();
        let mut last = None;
        if url.is_some() || event_types.is_some() || description.is_some() {
            let update = WebhookSubscriptionCommand::Update { url, event_types, description, by };
            last = Some(dispatcher.execute::<WebhookSubscription>(ctx, &stream, update).await?);
        }
        let toggle = match changes.enabled {
            Some(true) => Some(WebhookSubscriptionCommand::Enable { by }),
            Some(false) => Some(WebhookSubscriptionCommand::Disable {
                reason: "disabled by a user".into(),
                by: Some(by),
            }),
            None => None,
        };
        if let Some(toggle) = toggle {
            last = Some(dispatcher.execute::<WebhookSubscription>(ctx, &stream, toggle).await?);
        }
        Ok(last)
    }

    /// Deletes a subscription and forgets its secrets.
    #[tracing::instrument(skip_all)]
    pub async fn unsubscribe(
        &self,
        ctx: &CommandContext,
        id: Uuid,
    ) -> Result<Executed<WebhookSubscription>, DispatchError> {
        ctx.require(Permission::WebhooksManage)?;
        let by = ctx.actor_id()?;
        self.subscription(ctx, id).await?;
        let secrets = self.secrets.clone();
        self.commands
            .dispatcher()
            .transact(ctx, None, move |uow| {
                let secrets = secrets.clone();
                Box::pin(async move {
                    secrets.forget(uow.conn(), id).await?;
                    uow.execute::<WebhookSubscription>(
                        &id.to_string(),
                        WebhookSubscriptionCommand::Delete { by },
                    )
                    .await
                })
            })
            .await?
            .fresh()
    }

    /// A new secret for a subscription; the current ones keep signing for 24 hours.
    #[tracing::instrument(skip_all)]
    pub async fn rotate(
        &self,
        ctx: &CommandContext,
        id: Uuid,
    ) -> Result<Issued<WebhookSubscription>, DispatchError> {
        ctx.require(Permission::WebhooksManage)?;
        let by = ctx.actor_id()?;
        self.subscription(ctx, id).await?;
        let (secret, now) = (new_secret(), self.clock.now());
        let until = now + ROTATION_OVERLAP;
        let (secrets, account_id, stored) = (self.secrets.clone(), ctx.account_id, secret.clone());
        let done = self
            .commands
            .dispatcher()
            .transact(ctx, None, move |uow| {
                let (secrets, stored) = (secrets.clone(), stored.clone());
                Box::pin(async move {
                    secrets.expire(uow.conn(), id, until).await?;
                    secrets.store(uow.conn(), id, account_id, &stored, now).await?;
                    let rotate = WebhookSubscriptionCommand::RotateSecret {
                        secret_fingerprint: fingerprint(&stored),
                        previous_valid_until: until,
                        by,
                    };
                    uow.execute::<WebhookSubscription>(&id.to_string(), rotate).await
                })
            })
            .await?
            .fresh()?;
        Ok(Issued { done, secret })
    }

    /// The subscription's delivery attempts, newest first, and how many there are.
    pub async fn attempts(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Attempt>, i64), DispatchError> {
        ctx.require(Permission::WebhooksManage)?;
        self.subscription(ctx, id).await?;
        let (total,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM webhook_attempts WHERE subscription_id = $1 AND account_id = $2",
        )
        .bind(id)
        .bind(ctx.account_id)
        .fetch_one(&self.pool)
        .await?;
        let attempts = sqlx::query_as(
            "SELECT event_id, attempt, status_code, error, duration_ms, at FROM webhook_attempts \
             WHERE subscription_id = $1 AND account_id = $2 ORDER BY at DESC, id DESC LIMIT $3 OFFSET $4",
        )
        .bind(id)
        .bind(ctx.account_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        Ok((attempts, total))
    }

    /// Sends one event of the account to the subscription again: the job is enqueued in `conn`'s
    /// transaction (wake the queue after its commit).
    #[tracing::instrument(skip_all)]
    pub async fn resend(
        &self,
        conn: &mut PgConnection,
        ctx: &CommandContext,
        id: Uuid,
        event_id: Uuid,
    ) -> Result<(), DispatchError> {
        ctx.require(Permission::WebhooksManage)?;
        self.subscription(ctx, id).await?;
        let found: Option<(Uuid,)> =
            sqlx::query_as("SELECT event_id FROM events WHERE event_id = $1 AND account_id = $2")
                .bind(event_id)
                .bind(ctx.account_id)
                .fetch_optional(&mut *conn)
                .await?;
        if found.is_none() {
            return Err(DispatchError::NotFound("event"));
        }
        self.queue.enqueue(conn, &resend_job(ctx.account_id, id, event_id)).await?;
        Ok(())
    }

    /// Sends again every event of the subscription's types recorded from `since` until `until`
    /// (now when absent), at most [`MAX_RECOVERED`]; returns how many. Enqueued in `conn`'s
    /// transaction (wake the queue after its commit).
    #[tracing::instrument(skip_all)]
    pub async fn recover(
        &self,
        conn: &mut PgConnection,
        ctx: &CommandContext,
        id: Uuid,
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> Result<u64, DispatchError> {
        ctx.require(Permission::WebhooksManage)?;
        let subscription = self.subscription(ctx, id).await?;
        let until = until.unwrap_or_else(|| self.clock.now());
        if until < since {
            return Err(invalid("until", "must not be before since"));
        }
        let events: Vec<(Uuid,)> = sqlx::query_as(
            "SELECT event_id FROM events WHERE account_id = $1 AND event_type = ANY($2) \
               AND recorded_at >= $3 AND recorded_at <= $4 ORDER BY position LIMIT $5",
        )
        .bind(ctx.account_id)
        .bind(&subscription.event_types)
        .bind(since)
        .bind(until)
        .bind(MAX_RECOVERED)
        .fetch_all(&mut *conn)
        .await?;
        let jobs: Vec<NewJob> = events.iter().map(|(e,)| resend_job(ctx.account_id, id, *e)).collect();
        Ok(self.queue.enqueue_many(conn, &jobs).await?)
    }
}
