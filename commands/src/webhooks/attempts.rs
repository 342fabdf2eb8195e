//! The record of delivery attempts, written in batches: deliveries hand their attempt to a
//! writer task that inserts whatever has gathered meanwhile in one statement. (A process that
//! dies loses at most the batch in flight; the delivery itself runs again, and is recorded then.)

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

/// One attempt, as the delivery saw it.
#[derive(Debug)]
pub(crate) struct AttemptRecord {
    pub account_id: Uuid,
    pub subscription_id: Uuid,
    pub event_id: Uuid,
    pub attempt: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
    pub at: DateTime<Utc>,
}

/// Most attempts inserted by one statement.
const BATCH: usize = 500;

/// Starts the writer; attempts sent to the returned sender are recorded until it is dropped.
pub(crate) fn writer(pool: PgPool) -> mpsc::UnboundedSender<AttemptRecord> {
    let (record, mut records) = mpsc::unbounded_channel::<AttemptRecord>();
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        while records.recv_many(&mut batch, BATCH).await > 0 {
            if let Err(e) = insert(&pool, &batch).await {
                tracing::warn!(error = %e, attempts = batch.len(), "could not record webhook attempts");
            }
            batch.clear();
        }
    });
    record
}

async fn insert(pool: &PgPool, batch: &[AttemptRecord]) -> Result<(), sqlx::Error> {
    let column = |f: fn(&AttemptRecord) -> Uuid| batch.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO webhook_attempts (account_id, subscription_id, event_id, attempt, status_code, error, duration_ms, at) \
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::int[], $5::int[], $6::text[], $7::int[], \
                              $8::timestamptz[])",
    )
    .bind(column(|a| a.account_id))
    .bind(column(|a| a.subscription_id))
    .bind(column(|a| a.event_id))
    .bind(batch.iter().map(|a| a.attempt).collect::<Vec<_>>())
    .bind(batch.iter().map(|a| a.status_code).collect::<Vec<_>>())
    .bind(batch.iter().map(|a| a.error.clone()).collect::<Vec<_>>())
    .bind(batch.iter().map(|a| a.duration_ms).collect::<Vec<_>>())
    .bind(batch.iter().map(|a| a.at).collect::<Vec<_>>())
    .execute(pool)
    .await?;
    Ok(())
}
