//! Process managers: consumers of the log that act on events by enqueuing jobs, in the same
//! transaction as their checkpoint (so each event causes its job exactly once, with the event as
//! the job's causation id). They are never replayed by a rebuild.

use std::sync::Arc;

use async_trait::async_trait;
use parley_eventstore::{Consumer, RecordedEvent, StoreError};
use parley_jobs::{JobQueue, NewJob, QueueName};
use serde_json::json;
use sqlx::PgConnection;

use crate::jobs::FORGET_SESSION_TOKENS;

/// When a session ends, its refresh tokens' index rows are of no more use (every token of an
/// ended session is refused by the session itself): a job deletes them, so `session_tokens` does
/// not grow with every rotation of every session forever.
pub struct EndedSessions {
    pub queue: JobQueue,
}

pub const ENDED_SESSIONS: &str = "ended_sessions";

#[async_trait]
impl Consumer for EndedSessions {
    fn name(&self) -> &'static str {
        ENDED_SESSIONS
    }

    fn wants(&self, event_type: &str) -> bool {
        event_type == "SessionEnded"
    }

    async fn handle(&self, tx: &mut PgConnection, events: &[&RecordedEvent]) -> Result<u64, StoreError> {
        let mut enqueued = 0;
        for e in events {
            let job = NewJob::new(FORGET_SESSION_TOKENS, json!({"session_id": e.stream_id}))
                .queue(QueueName::Low)
                .account(e.account_id)
                .caused_by(e.event_id);
            enqueued += u64::from(self.queue.enqueue(tx, &job).await?.is_some());
        }
        Ok(enqueued)
    }

    async fn committed(&self) {
        self.queue.wake().await;
    }
}

/// Every process manager of the platform.
pub fn all(queue: &JobQueue) -> Vec<Arc<dyn Consumer>> {
    vec![Arc::new(EndedSessions { queue: queue.clone() })]
}
