//! Webhooks, out and in, to the Standard Webhooks specification (v1).
//!
//! Out: a customer subscribes an endpoint to event types; the fan-out (a process manager) makes
//! one delivery job per event and subscription; the delivery signs and sends it, retrying on a
//! schedule. In: an integration posts to a hook bound to a conversation, signed with the hook's
//! secret; the request is verified at once and the message posted by a job.
//!
//! Secrets are sealed in `webhook_secrets` (never in the log, which keeps fingerprints), and no
//! request leaves for a non-public address unless `allow_private` is set.

pub mod address;
mod attempts;
mod deliver;
pub(crate) mod fanout;
mod hooks;
mod incoming;
pub mod secrets;
mod service;
pub mod signing;

use std::sync::Arc;
use std::time::Duration;

use parley_aggregates::webhook::{WebhookSubscription, WebhookSubscriptionCommand};
use parley_eventstore::Consumer;
use parley_jobs::{Clock, Failure, Handlers, JobQueue};
use sqlx::PgPool;
use uuid::Uuid;

pub use deliver::{DELIVER, MAX_ATTEMPTS as DELIVERY_ATTEMPTS};
pub use fanout::WEBHOOK_FANOUT;
pub use hooks::Received;
pub use incoming::INCOMING;
pub use secrets::SecretBox;
pub use service::{Attempt, Issued, SubscriptionChanges};

use crate::context::{Actor, CommandContext};
use crate::services::Commands;

/// How long a delivery may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// The webhooks of a process: what the endpoints, the fan-out and the jobs share.
#[derive(Clone)]
pub struct Webhooks {
    commands: Commands,
    queue: JobQueue,
    pool: PgPool,
    secrets: SecretBox,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
    allow_private: bool,
    /// Where deliveries send their attempts to be recorded.
    attempts: tokio::sync::mpsc::UnboundedSender<attempts::AttemptRecord>,
}

impl Webhooks {
    /// `allow_private` lets subscriptions and deliveries reach loopback and private addresses
    /// (tests, development). Must be called inside a tokio runtime (it starts the attempts'
    /// writer).
    pub fn new(commands: Commands, queue: JobQueue, secrets: SecretBox, allow_private: bool) -> Self {
        let mut client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .user_agent(concat!("Parley-Webhooks/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            client = client.dns_resolver(Arc::new(address::PublicOnly));
        }
        // Building fails only without a TLS backend, which this build always has.
        let client = client.build().unwrap_or_default();
        let pool = commands.dispatcher().store.pool().clone();
        let clock = queue.clock().clone();
        let attempts = attempts::writer(pool.clone());
        Self { commands, queue, pool, secrets, client, clock, allow_private, attempts }
    }

    /// The handlers of webhook jobs.
    pub fn handlers(&self, handlers: Handlers) -> Handlers {
        handlers
            .with(deliver::Deliver { webhooks: self.clone() })
            .with(incoming::PostIncoming { webhooks: self.clone() })
    }

    /// The fan-out process manager.
    pub fn fanout(&self) -> Arc<dyn Consumer> {
        Arc::new(fanout::WebhookFanout { queue: self.queue.clone() })
    }

    /// Disables a subscription on the platform's behalf.
    async fn disable(&self, account_id: Uuid, subscription_id: Uuid, reason: &str) -> Result<(), Failure> {
        let ctx = CommandContext::new(account_id, Actor::system());
        let disable = WebhookSubscriptionCommand::Disable { reason: reason.into(), by: None };
        match self
            .commands
            .dispatcher()
            .execute::<WebhookSubscription>(&ctx, &subscription_id.to_string(), disable)
            .await
        {
            Ok(_) => {
                metrics::counter!("parley_webhook_subscriptions_disabled_total").increment(1);
                tracing::warn!(%subscription_id, reason, "webhook subscription disabled");
                Ok(())
            }
            Err(crate::error::DispatchError::Domain(_)) => Ok(()),
            Err(e) => Err(Failure::new(format!("could not disable the subscription: {e}"))),
        }
    }
}
