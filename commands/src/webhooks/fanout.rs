//! The webhook fan-out: a process manager that turns each event into one delivery job per
//! subscription of its account that wants its type, in the transaction that moves its checkpoint
//! (exactly once per event and subscription). It learns subscriptions from the log itself, in log
//! order, keeping them in `webhook_routes`: a subscription receives exactly the events after its
//! creation, however far behind any read model is.

use std::collections::HashMap;

use async_trait::async_trait;
use parley_eventstore::{Consumer, RecordedEvent, StoreError};
use parley_jobs::{JobQueue, NewJob};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::deliver::{delivery_job, DELIVER};

pub const WEBHOOK_FANOUT: &str = "webhook_fanout";

pub struct WebhookFanout {
    pub queue: JobQueue,
}

/// A subscription as the fan-out knows it at its point in the log.
struct Route {
    subscription_id: Uuid,
    event_types: Vec<String>,
}

fn uuid_field(payload: &serde_json::Value, field: &str) -> Option<Uuid> {
    payload.get(field)?.as_str()?.parse().ok()
}

fn strings(payload: &serde_json::Value, field: &str) -> Vec<String> {
    payload
        .get(field)
        .and_then(|v| v.as_array())
        .map(|items| items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Applies a subscription event to `webhook_routes` alone: the fan-out's state derived again from
/// an imported log (whose fan-out then starts at the imported head, with these routes).
pub(crate) async fn follow_route(tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), StoreError> {
    follow(tx, &mut HashMap::new(), event).await
}

/// Applies a subscription event to `webhook_routes` and to the batch's view of the routes.
async fn follow(
    tx: &mut PgConnection,
    routes: &mut HashMap<Uuid, Vec<Route>>,
    event: &RecordedEvent,
) -> Result<(), StoreError> {
    let p = &event.payload;
    let Some(subscription_id) = uuid_field(p, "subscription_id") else { return Ok(()) };
    let account = event.account_id;
    match event.event_type.as_str() {
        "WebhookSubscriptionCreated" | "WebhookSubscriptionUpdated" => {
            let url = p.get("url").and_then(|u| u.as_str()).unwrap_or_default();
            let event_types = strings(p, "event_types");
            sqlx::query(
                "INSERT INTO webhook_routes (subscription_id, account_id, url, event_types, enabled) \
                 VALUES ($1, $2, $3, $4, true) \
                 ON CONFLICT (subscription_id) DO UPDATE SET url = $3, event_types = $4",
            )
            .bind(subscription_id)
            .bind(account)
            .bind(url)
            .bind(&event_types)
            .execute(&mut *tx)
            .await?;
        }
        "WebhookSubscriptionDisabled" => {
            sqlx::query("UPDATE webhook_routes SET enabled = false WHERE subscription_id = $1")
                .bind(subscription_id)
                .execute(&mut *tx)
                .await?;
        }
        "WebhookSubscriptionEnabled" => {
            sqlx::query(
                "UPDATE webhook_routes SET enabled = true, failing_since = NULL WHERE subscription_id = $1",
            )
            .bind(subscription_id)
            .execute(&mut *tx)
            .await?;
        }
        "WebhookSubscriptionDeleted" => {
            sqlx::query("DELETE FROM webhook_routes WHERE subscription_id = $1")
                .bind(subscription_id)
                .execute(&mut *tx)
                .await?;
        }
        _ => return Ok(()),
    }
    let (enabled, event_types): (bool, Vec<String>) =
        sqlx::query_as("SELECT enabled, event_types FROM webhook_routes WHERE subscription_id = $1")
            .bind(subscription_id)
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or((false, Vec::new()));
    let of_account = routes.entry(account).or_default();
    of_account.retain(|r| r.subscription_id != subscription_id);
    if enabled {
        of_account.push(Route { subscription_id, event_types });
    }
    Ok(())
}

#[async_trait]
impl Consumer for WebhookFanout {
    fn name(&self) -> &'static str {
        WEBHOOK_FANOUT
    }

    /// Any event may be subscribed to.
    fn wants(&self, _event_type: &str) -> bool {
        true
    }

    async fn handle(&self, tx: &mut PgConnection, events: &[&RecordedEvent]) -> Result<u64, StoreError> {
        let mut accounts: Vec<Uuid> = events.iter().map(|e| e.account_id).collect();
        accounts.sort();
        accounts.dedup();
        let rows: Vec<(Uuid, Uuid, Vec<String>)> = sqlx::query_as(
            "SELECT account_id, subscription_id, event_types FROM webhook_routes \
             WHERE enabled AND account_id = ANY($1)",
        )
        .bind(&accounts)
        .fetch_all(&mut *tx)
        .await?;
        let mut routes: HashMap<Uuid, Vec<Route>> = HashMap::new();
        for (account, subscription_id, event_types) in rows {
            routes.entry(account).or_default().push(Route { subscription_id, event_types });
        }
        let mut jobs: Vec<NewJob> = Vec::new();
        let mut routes_changed = 0;
        for event in events {
            if event.stream_type == "WebhookSubscription" {
                follow(tx, &mut routes, event).await?;
                routes_changed += 1;
            }
            for route in routes.get(&event.account_id).into_iter().flatten() {
                if route.event_types.contains(&event.event_type) {
                    jobs.push(delivery_job(event.account_id, route.subscription_id, event.event_id));
                }
            }
        }
        let mut enqueued = 0;
        if !jobs.is_empty() {
            enqueued = self.queue.enqueue_many(tx, &jobs).await?;
            metrics::counter!("parley_webhook_deliveries_enqueued_total").increment(jobs.len() as u64);
            tracing::debug!(jobs = jobs.len(), kind = DELIVER, "webhook deliveries enqueued");
        }
        Ok(enqueued + routes_changed)
    }

    async fn committed(&self) {
        self.queue.wake().await;
    }
}

/// Used by the resend and recover endpoints: a delivery of `event_id` outside the fan-out.
pub fn resend_job(account_id: Uuid, subscription_id: Uuid, event_id: Uuid) -> NewJob {
    NewJob::new(DELIVER, json!({"subscription_id": subscription_id, "event_id": event_id, "resend": true}))
        .account(account_id)
        .max_attempts(super::deliver::MAX_ATTEMPTS)
        .caused_by(event_id)
}
