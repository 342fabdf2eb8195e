//! The `creator_timers` process manager and its jobs: an ended stream is archived; a live stream
//! whose host stays away is ended; a grant past its `expires_at` is recorded as expired. Each
//! job decides under its stream's lock and records nothing when there is nothing left to do,
//! so retries and restarts are harmless.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parley_aggregates::creator::{
    AccessGrant, AccessGrantCommand, AccessGrantEvent, Stream, StreamCommand, StreamEvent, StreamState,
};
use parley_aggregates::from_payload;
use parley_eventstore::{Consumer, RecordedEvent, StoreError};
use parley_jobs::{Failure, Handler, Handlers, Job, NewJob, QueueName};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::Creator;
use crate::context::{Actor, CommandContext};
use crate::error::DispatchError;

pub const CREATOR_TIMERS: &str = "creator_timers";
/// Records `StreamArchived` for an ended stream.
pub const ARCHIVE_STREAM: &str = "streams.archive";
/// Ends a live stream whose host has been away for `abandon_after`, or looks again later.
pub const END_ABANDONED_STREAM: &str = "streams.end_abandoned";
/// Records `AccessGrantExpired` once a grant's time has passed.
pub const EXPIRE_GRANT: &str = "access_grants.expire";
/// Opens the primary space of every account opened before spaces existed (once; opening one
/// that is there changes nothing).
pub const OPEN_PRIMARY_SPACES: &str = "spaces.open_primary";

/// Sets the timers of streams and grants as their events commit.
pub struct CreatorTimers {
    creator: Creator,
}

impl Creator {
    pub fn timers(&self) -> std::sync::Arc<dyn Consumer> {
        std::sync::Arc::new(CreatorTimers { creator: self.clone() })
    }

    /// The handlers of the creator platform's jobs, added to `handlers`.
    pub fn handlers(&self, handlers: Handlers) -> Handlers {
        handlers
            .with(CreatorJob { creator: self.clone(), kind: ARCHIVE_STREAM })
            .with(CreatorJob { creator: self.clone(), kind: END_ABANDONED_STREAM })
            .with(CreatorJob { creator: self.clone(), kind: EXPIRE_GRANT })
            .with(CreatorJob { creator: self.clone(), kind: OPEN_PRIMARY_SPACES })
    }

    fn abandon_check(&self, account_id: Uuid, stream_id: Uuid, host: Uuid, at: DateTime<Utc>) -> NewJob {
        NewJob::new(END_ABANDONED_STREAM, json!({"stream_id": stream_id, "host_id": host}))
            .queue(QueueName::Default)
            .account(account_id)
            .run_at(at)
    }

    /// Ends the stream when its host has been away for `abandon_after`; otherwise looks again
    /// `abandon_after` after the host was last seen.
    async fn end_if_abandoned(&self, account_id: Uuid, stream_id: Uuid, host: Uuid) -> Result<(), Failure> {
        let loaded = self.commands.dispatcher().load::<Stream>(&stream_id.to_string()).await.map_err(fail)?;
        if loaded.is_none_or(|l| l.aggregate.state != StreamState::Live) {
            return Ok(());
        }
        let pool = self.commands.dispatcher().store().pool().clone();
        let (connected, last_seen): (bool, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM presence_connections WHERE user_id = $1), \
                    (SELECT last_seen_at FROM presence_last_seen WHERE user_id = $1)",
        )
        .bind(host)
        .fetch_one(&pool)
        .await
        .map_err(|e| Failure::new(e.to_string()))?;
        let now = self.now();
        let away = chrono::Duration::from_std(self.abandon_after).unwrap_or_default();
        let look_again = match (connected, last_seen) {
            (true, _) => Some(now + away),
            (false, Some(seen)) if seen + away > now => Some(seen + away),
            _ => None,
        };
        if let Some(at) = look_again {
            let mut conn = pool.acquire().await.map_err(|e| Failure::new(e.to_string()))?;
            let again = self.abandon_check(account_id, stream_id, host, at);
            self.queue.enqueue(&mut conn, &again).await.map_err(|e| Failure::new(e.to_string()))?;
            return Ok(());
        }
        let ctx = CommandContext::new(account_id, Actor::system());
        match self.end_stream(&ctx, stream_id, None).await {
            Ok(_) | Err(DispatchError::Domain(_)) => Ok(()),
            Err(e) => Err(fail(e)),
        }
    }
}

impl Creator {
    /// The job that opens missing primary spaces, for a node to enqueue as it starts. Running
    /// it twice (two nodes starting) opens nothing twice: the space's id is the account's.
    pub fn open_primary_spaces_job() -> NewJob {
        NewJob::new(OPEN_PRIMARY_SPACES, json!({})).queue(QueueName::Low)
    }

    /// Every account of the log without its primary space gets it, as its owner opened it.
    async fn open_primary_spaces(&self) -> Result<(), Failure> {
        let pool = self.commands.dispatcher().store().pool().clone();
        let opened: Vec<(Uuid, serde_json::Value)> = sqlx::query_as(
            "SELECT e.account_id, e.payload FROM events e WHERE e.event_type = 'AccountOpened' \
               AND NOT EXISTS (SELECT 1 FROM events s WHERE s.stream_type = 'Space' AND s.version = 1 \
                                 AND s.account_id = e.account_id AND s.payload->>'is_primary' = 'true')",
        )
        .fetch_all(&pool)
        .await
        .map_err(|e| Failure::new(e.to_string()))?;
        for (account_id, payload) in opened {
            let Some(owner) = payload.get("owner_id").and_then(|v| v.as_str()).and_then(|s| s.parse().ok())
            else {
                continue;
            };
            let (key, open) = Creator::primary_space_command(account_id, owner);
            let ctx = CommandContext::new(account_id, Actor::system());
            match self
                .commands
                .dispatcher()
                .execute::<parley_aggregates::creator::Space>(&ctx, &key, open)
                .await
            {
                Ok(_) | Err(DispatchError::Domain(_) | DispatchError::Claimed { .. }) => {}
                Err(e) => return Err(fail(e)),
            }
        }
        Ok(())
    }
}

fn fail(e: DispatchError) -> Failure {
    Failure::new(e.to_string())
}

#[async_trait]
impl Consumer for CreatorTimers {
    fn name(&self) -> &'static str {
        CREATOR_TIMERS
    }

    fn wants(&self, event_type: &str) -> bool {
        matches!(event_type, "StreamStarted" | "StreamEnded" | "AccessGranted")
    }

    async fn handle(&self, tx: &mut PgConnection, events: &[&RecordedEvent]) -> Result<u64, StoreError> {
        let mut jobs = Vec::new();
        let away = chrono::Duration::from_std(self.creator.abandon_after).unwrap_or_default();
        for e in events {
            let job = match e.event_type.as_str() {
                "StreamStarted" => match from_payload::<StreamEvent>(&e.event_type, &e.payload) {
                    Ok(StreamEvent::StreamStarted { stream_id, started_by, .. }) => Some(
                        self.creator.abandon_check(e.account_id, stream_id, started_by, e.recorded_at + away),
                    ),
                    _ => None,
                },
                "StreamEnded" => Some(NewJob::new(ARCHIVE_STREAM, json!({"stream_id": e.stream_id}))),
                "AccessGranted" => match from_payload::<AccessGrantEvent>(&e.event_type, &e.payload) {
                    Ok(AccessGrantEvent::AccessGranted { grant_id, expires_at: Some(at), .. }) => {
                        Some(NewJob::new(EXPIRE_GRANT, json!({"grant_id": grant_id})).run_at(at))
                    }
                    _ => None,
                },
                _ => None,
            };
            if let Some(job) = job {
                jobs.push(job.account(e.account_id).caused_by(e.event_id));
            }
        }
        Ok(self.creator.queue.enqueue_many(tx, &jobs).await?)
    }

    async fn committed(&self) {
        self.creator.queue.wake().await;
    }
}

struct CreatorJob {
    creator: Creator,
    kind: &'static str,
}

fn id_arg(job: &Job, name: &str) -> Result<Uuid, Failure> {
    job.args[name]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Failure::new(format!("no {name} in the job's arguments")))
}

#[async_trait]
impl Handler for CreatorJob {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn run(&self, job: &Job) -> Result<(), Failure> {
        let ctx = CommandContext::new(job.account_id, Actor::system());
        let dispatcher = self.creator.commands.dispatcher();
        let done = match self.kind {
            ARCHIVE_STREAM => {
                let stream_id = id_arg(job, "stream_id")?;
                let archive = StreamCommand::Archive { at: self.creator.now() };
                dispatcher.execute::<Stream>(&ctx, &stream_id.to_string(), archive).await.map(|_| ())
            }
            EXPIRE_GRANT => {
                let grant_id = id_arg(job, "grant_id")?;
                let now = self.creator.now();
                match dispatcher
                    .execute::<AccessGrant>(&ctx, &grant_id.to_string(), AccessGrantCommand::Expire { now })
                    .await
                {
                    // Run before its time (another node's clock): again, a little later.
                    Err(DispatchError::Domain(parley_aggregates::DomainError::AccessGrant(
                        parley_aggregates::creator::AccessGrantError::NotExpired,
                    ))) => return Err(Failure::new("not expired yet").retry_in(Duration::from_secs(5))),
                    other => other.map(|_| ()),
                }
            }
            OPEN_PRIMARY_SPACES => return self.creator.open_primary_spaces().await,
            _ => {
                let (stream_id, host) = (id_arg(job, "stream_id")?, id_arg(job, "host_id")?);
                return self.creator.end_if_abandoned(job.account_id, stream_id, host).await;
            }
        };
        match done {
            Ok(()) | Err(DispatchError::Domain(_)) => Ok(()),
            Err(e) => Err(fail(e)),
        }
    }
}
