//! Delivering one event to one subscription: the Standard Webhooks request, signed afresh on
//! every attempt with every secret that signs now; each attempt recorded. A 2xx succeeds; a 410
//! completes and disables the subscription; anything else (a redirect included: never followed)
//! fails and runs again after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h (±20%), or after the
//! receiver's `Retry-After`; then the dead set. A subscription failing for 5 days is disabled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parley_aggregates::secrets::redact;
use parley_jobs::{Clock, Failure, Handler, Job, NewJob};
use rand::Rng;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::address::{is_public, literal_ip};
use super::attempts::AttemptRecord;
use super::signing::signature_header;
use super::Webhooks;

pub const DELIVER: &str = "webhooks.deliver";
/// The first attempt and seven retries.
pub const MAX_ATTEMPTS: i32 = 8;
/// The wait after each failed attempt, before jitter.
const SCHEDULE: [u64; 7] = [5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600];
/// A subscription whose deliveries keep failing this long is disabled.
pub const FAILING_FOR: chrono::Duration = chrono::Duration::days(5);
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The delivery of `event_id` to `subscription_id`: one per pair, ever (the fan-out runs exactly
/// once per event; the unique key also guards a hand-made enqueue).
pub fn delivery_job(account_id: Uuid, subscription_id: Uuid, event_id: Uuid) -> NewJob {
    NewJob::new(DELIVER, json!({"subscription_id": subscription_id, "event_id": event_id}))
        .account(account_id)
        .max_attempts(MAX_ATTEMPTS)
        .unique(format!("{subscription_id}:{event_id}"), Duration::from_secs(24 * 3600))
        .caused_by(event_id)
}

/// Whether a subscription failing since `since` has failed long enough to be disabled.
fn failing_too_long(since: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now - since >= FAILING_FOR
}

/// The wait after the `count`th failure (from 0), ±20%.
pub fn backoff(count: i32) -> Duration {
    let base = SCHEDULE[(count.max(0) as usize).min(SCHEDULE.len() - 1)] as f64;
    Duration::from_secs_f64(base * rand::rng().random_range(0.8..=1.2))
}

/// A `Retry-After` header: seconds, or an HTTP date.
fn retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => (DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc) - now).to_std().ok()?,
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// What a delivery needs, read at once.
#[derive(sqlx::FromRow)]
struct Found {
    url: String,
    failing_since: Option<DateTime<Utc>>,
    event_type: String,
    payload: serde_json::Value,
    recorded_at: DateTime<Utc>,
    secrets: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Found {
    /// The request body: the event's type, time and (redacted) data.
    fn body(&self) -> Vec<u8> {
        let mut data = self.payload.clone();
        redact(&mut data);
        let body = json!({
            "type": self.event_type,
            "timestamp": self.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "data": data,
        });
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// What one attempt came to.
struct Outcome {
    status: Option<u16>,
    error: Option<String>,
    retry_after: Option<Duration>,
}

pub(crate) struct Deliver {
    pub webhooks: Webhooks,
}

impl Deliver {
    fn pool(&self) -> &PgPool {
        &self.webhooks.pool
    }

    fn clock(&self) -> &Arc<dyn Clock> {
        &self.webhooks.clock
    }

    /// In one round trip: the subscription's URL while it is enabled, the event, and the
    /// secrets that sign at `now`.
    async fn load(
        &self,
        account_id: Uuid,
        subscription_id: Uuid,
        event_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Found>, sqlx::Error> {
        sqlx::query_as(
            "SELECT r.url, r.failing_since, e.event_type, e.payload, e.recorded_at, \
                    ARRAY(SELECT ROW(s.nonce, s.sealed) FROM webhook_secrets s \
                          WHERE s.owner_id = r.subscription_id AND (s.valid_until IS NULL OR s.valid_until > $4) \
                          ORDER BY s.created_at DESC) AS secrets \
             FROM webhook_routes r JOIN events e ON e.event_id = $3 AND e.account_id = r.account_id \
             WHERE r.subscription_id = $2 AND r.account_id = $1 AND r.enabled",
        )
        .bind(account_id)
        .bind(subscription_id)
        .bind(event_id)
        .bind(now)
        .fetch_optional(self.pool())
        .await
    }

    async fn send(&self, url: &str, event_id: Uuid, body: Vec<u8>, secrets: &[String]) -> Outcome {
        let failed = |error: String| Outcome { status: None, error: Some(error), retry_after: None };
        let Ok(parsed) = reqwest::Url::parse(url) else { return failed("the URL does not parse".into()) };
        if !self.webhooks.allow_private && literal_ip(&parsed).is_some_and(|ip| !is_public(ip)) {
            return failed("the URL's address is not public".into());
        }
        let id = event_id.to_string();
        let timestamp = self.clock().now().timestamp();
        let signature = signature_header(secrets, &id, timestamp, &body);
        let sent = self
            .webhooks
            .client
            .post(parsed)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after(v, self.clock().now()));
                let error = (!status.is_success()).then(|| match status.is_redirection() {
                    true => format!("answered {status}; redirects are not followed"),
                    false => format!("answered {status}"),
                });
                Outcome { status: Some(status.as_u16()), error, retry_after }
            }
            Err(e) if e.is_timeout() => failed("no answer within 15 s".into()),
            Err(e) => failed(format!("could not send: {}", error_chain(&e))),
        }
    }

    fn record(&self, job: &Job, subscription_id: Uuid, event_id: Uuid, outcome: &Outcome, took: Duration) {
        let record = AttemptRecord {
            account_id: job.account_id,
            subscription_id,
            event_id,
            attempt: job.attempt,
            status_code: outcome.status.map(i32::from),
            error: outcome.error.clone(),
            duration_ms: took.as_millis().min(i32::MAX as u128) as i32,
            at: self.clock().now(),
        };
        if self.webhooks.attempts.send(record).is_err() {
            tracing::warn!("the attempt writer has stopped; an attempt went unrecorded");
        }
    }
}

/// An error with its causes, for the attempt's record.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn arg(job: &Job, name: &str) -> Result<Uuid, Failure> {
    job.args[name]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Failure::new(format!("no {name} in the job's arguments")))
}

#[async_trait]
impl Handler for Deliver {
    fn kind(&self) -> &'static str {
        DELIVER
    }

    fn backoff(&self, count: i32) -> Duration {
        backoff(count)
    }

    /// Idempotent as the specification asks of receivers: every attempt carries the same
    /// `webhook-id` (the event's id), so a receiver that saw it already can ignore it.
    async fn run(&self, job: &Job) -> Result<(), Failure> {
        let subscription_id = arg(job, "subscription_id")?;
        let event_id = arg(job, "event_id")?;
        let now = self.clock().now();
        let Some(found) =
            self.load(job.account_id, subscription_id, event_id, now).await.map_err(|e| e.to_string())?
        else {
            // The subscription was deleted or disabled since, or the event is gone: nothing to send.
            return Ok(());
        };
        let failing_since = found.failing_since;
        let secrets = self.webhooks.secrets.open_all(&found.secrets);
        let body = found.body();
        let started = Instant::now();
        let outcome = self.send(&found.url, event_id, body, &secrets).await;
        let took = started.elapsed();
        self.record(job, subscription_id, event_id, &outcome, took);
        let label = match outcome.status {
            Some(s) if (200..300).contains(&s) => "delivered",
            Some(410) => "gone",
            Some(_) => "refused",
            None => "unreachable",
        };
        metrics::counter!("parley_webhook_attempts_total", "outcome" => label).increment(1);
        metrics::histogram!("parley_webhook_attempt_seconds").record(took.as_secs_f64());
        match outcome.status {
            Some(s) if (200..300).contains(&s) => {
                if failing_since.is_some() {
                    let _ = sqlx::query(
                        "UPDATE webhook_routes SET failing_since = NULL WHERE subscription_id = $1",
                    )
                    .bind(subscription_id)
                    .execute(self.pool())
                    .await;
                }
                Ok(())
            }
            Some(410) => {
                self.webhooks
                    .disable(job.account_id, subscription_id, "the endpoint answered 410 Gone")
                    .await?;
                Ok(())
            }
            _ => {
                let since: (DateTime<Utc>,) = sqlx::query_as(
                    "UPDATE webhook_routes SET failing_since = COALESCE(failing_since, $2) \
                     WHERE subscription_id = $1 RETURNING failing_since",
                )
                .bind(subscription_id)
                .bind(now)
                .fetch_one(self.pool())
                .await
                .map_err(|e| e.to_string())?;
                if failing_too_long(since.0, now) {
                    self.webhooks
                        .disable(job.account_id, subscription_id, "deliveries failed for 5 days")
                        .await?;
                    return Ok(());
                }
                let failure = Failure::new(outcome.error.unwrap_or_else(|| "failed".into()));
                Err(match outcome.retry_after {
                    Some(wait) => failure.retry_in(wait),
                    None => failure,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn retries_follow_the_schedule_within_twenty_percent() {
        for (count, base) in SCHEDULE.iter().enumerate() {
            for _ in 0..50 {
                let wait = backoff(count as i32).as_secs_f64();
                assert!(
                    wait >= *base as f64 * 0.8 - 1e-6 && wait <= *base as f64 * 1.2 + 1e-6,
                    "{count}: {wait}"
                );
            }
        }
        assert!(backoff(20).as_secs() >= 8 * 3600);
    }

    #[test]
    fn a_subscription_is_disabled_after_five_days_of_failures_and_not_before() {
        let since = Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap();
        assert!(!failing_too_long(since, since + chrono::Duration::days(5) - chrono::Duration::seconds(1)));
        assert!(failing_too_long(since, since + chrono::Duration::days(5)));
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date_and_capped() {
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap();
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("Sun, 29 Nov 2026 12:01:00 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(retry_after("999999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after("soon", now), None);
    }
}
