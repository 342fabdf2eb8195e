//! Calls on the write side: the use cases behind `/conversations/{id}/calls`, the `call_ringing`
//! process manager (which rings the callees and sets the ring timer), and the two jobs it
//! enqueues. The timer is a durable job, so a call rings out into `missed` however many nodes
//! restart meanwhile; it decides under the call's stream lock like an accept does, so exactly one
//! of them wins.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parley_aggregates::call::{Call, CallCommand};
use parley_aggregates::conversation::Conversation;
use parley_aggregates::permissions::Permission;
use parley_eventstore::{Consumer, RecordedEvent, StoreError};
use parley_jobs::{Clock, Failure, Handler, Handlers, Job, JobQueue, NewJob, QueueName};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::context::{Actor, CommandContext};
use crate::dispatcher::{Idempotency, Idempotent};
use crate::error::DispatchError;
use crate::services::Commands;
use crate::unit_of_work::Executed;

/// The claim that keeps one live call per conversation.
pub const LIVE_CALL_CLAIM: &str = "live_call";
pub const CALL_RINGING: &str = "call_ringing";
/// Records that the callees were told.
pub const RING: &str = "calls.ring";
/// Ends a call nobody accepted in time.
pub const MISS: &str = "calls.miss";
/// How long a call rings unless configured (`PARLEY_CALL_RING_SECONDS`).
pub const DEFAULT_RING: Duration = Duration::from_secs(30);

/// The calls of a process.
#[derive(Clone)]
pub struct Calls {
    commands: Commands,
    queue: JobQueue,
    ring: Duration,
}

impl Calls {
    pub fn new(commands: Commands, queue: JobQueue, ring: Duration) -> Self {
        Self { commands, queue, ring }
    }

    fn clock(&self) -> &Arc<dyn Clock> {
        self.queue.clock()
    }

    /// The call `call_id` of `conversation_id`, for a member of it (404 otherwise).
    async fn call_of(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        call_id: Uuid,
    ) -> Result<(), DispatchError> {
        let call = self.commands.dispatcher().load::<Call>(&call_id.to_string()).await?;
        let ours = call.is_some_and(|c| {
            c.account_id == ctx.account_id && c.aggregate.conversation_id == Some(conversation_id)
        });
        if !ours {
            return Err(DispatchError::NotFound("call"));
        }
        Ok(())
    }

    /// Starts a `kind` call from the caller to the conversation's other members.
    pub async fn start(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        kind: &str,
    ) -> Result<Executed<Call>, DispatchError> {
        self.start_with(ctx, conversation_id, kind, None).await?.fresh()
    }

    /// [`Calls::start`] under an optional idempotency key.
    #[tracing::instrument(skip_all, fields(%conversation_id))]
    pub async fn start_with(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        kind: &str,
        idempotency: Option<&Idempotency<'_, Executed<Call>>>,
    ) -> Result<Idempotent<Executed<Call>>, DispatchError> {
        ctx.require(Permission::CallsStart)?;
        let caller = ctx.user_id()?;
        if !matches!(kind, "audio" | "video") {
            return Err(DispatchError::Invalid { field: "kind", message: "must be audio or video".into() });
        }
        let conversation =
            self.commands.dispatcher().load::<Conversation>(&conversation_id.to_string()).await?;
        let Some(conversation) =
            conversation.filter(|c| c.account_id == ctx.account_id && c.aggregate.is_member(caller))
        else {
            return Err(DispatchError::NotFound("conversation"));
        };
        let callee_ids: Vec<Uuid> =
            conversation.aggregate.members.keys().copied().filter(|m| *m != caller).collect();
        if callee_ids.is_empty() {
            return Err(DispatchError::Invalid {
                field: "conversation",
                message: "has no one else to call".into(),
            });
        }
        let call_id = Uuid::now_v7();
        let start = CallCommand::Start {
            call_id,
            account_id: ctx.account_id,
            conversation_id,
            kind: kind.to_owned(),
            initiator_id: caller,
            callee_ids,
        };
        self.commands.dispatcher().execute_with::<Call>(ctx, &call_id.to_string(), start, idempotency).await
    }

    async fn answer(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        call_id: Uuid,
        command: impl FnOnce(Uuid, chrono::DateTime<chrono::Utc>) -> CallCommand,
    ) -> Result<Executed<Call>, DispatchError> {
        let user_id = ctx.user_id()?;
        self.call_of(ctx, conversation_id, call_id).await?;
        let command = command(user_id, self.clock().now());
        self.commands.dispatcher().execute::<Call>(ctx, &call_id.to_string(), command).await
    }

    /// A callee joins: the call becomes active.
    #[tracing::instrument(skip_all, fields(%call_id))]
    pub async fn accept(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        call_id: Uuid,
    ) -> Result<Executed<Call>, DispatchError> {
        self.answer(ctx, conversation_id, call_id, |user_id, at| CallCommand::Accept { user_id, at }).await
    }

    /// A callee declines.
    #[tracing::instrument(skip_all, fields(%call_id))]
    pub async fn decline(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        call_id: Uuid,
    ) -> Result<Executed<Call>, DispatchError> {
        self.answer(ctx, conversation_id, call_id, |user_id, at| CallCommand::Decline { user_id, at }).await
    }

    /// A participant hangs up.
    #[tracing::instrument(skip_all, fields(%call_id))]
    pub async fn hang_up(
        &self,
        ctx: &CommandContext,
        conversation_id: Uuid,
        call_id: Uuid,
    ) -> Result<Executed<Call>, DispatchError> {
        self.answer(ctx, conversation_id, call_id, |user_id, at| CallCommand::HangUp { user_id, at }).await
    }

    /// The ring timer ran out (the `calls.miss` job; tests call it to race an accept).
    pub async fn ring_out(&self, account_id: Uuid, call_id: Uuid) -> Result<Executed<Call>, DispatchError> {
        let ctx = CommandContext::new(account_id, Actor::system());
        let miss = CallCommand::Miss { at: self.clock().now() };
        self.commands.dispatcher().execute::<Call>(&ctx, &call_id.to_string(), miss).await
    }

    /// The handlers of call jobs.
    pub fn handlers(&self, handlers: Handlers) -> Handlers {
        handlers
            .with(CallJob { calls: self.clone(), kind: RING })
            .with(CallJob { calls: self.clone(), kind: MISS })
    }

    /// The ringing process manager.
    pub fn ringing(&self) -> Arc<dyn Consumer> {
        Arc::new(CallRinging { queue: self.queue.clone(), ring: self.ring })
    }
}

/// On each `CallStarted`: ring the callees now, and ring out after the ring time.
struct CallRinging {
    queue: JobQueue,
    ring: Duration,
}

#[async_trait]
impl Consumer for CallRinging {
    fn name(&self) -> &'static str {
        CALL_RINGING
    }

    fn wants(&self, event_type: &str) -> bool {
        event_type == "CallStarted"
    }

    async fn handle(&self, tx: &mut PgConnection, events: &[&RecordedEvent]) -> Result<u64, StoreError> {
        let mut jobs = Vec::with_capacity(events.len() * 2);
        for e in events {
            let args = json!({"call_id": e.stream_id});
            let ring_out_at = e.recorded_at + chrono::Duration::from_std(self.ring).unwrap_or_default();
            jobs.push(
                NewJob::new(RING, args.clone())
                    .queue(QueueName::Critical)
                    .account(e.account_id)
                    .caused_by(e.event_id),
            );
            jobs.push(
                NewJob::new(MISS, args)
                    .queue(QueueName::Critical)
                    .account(e.account_id)
                    .caused_by(e.event_id)
                    .run_at(ring_out_at),
            );
        }
        Ok(self.queue.enqueue_many(tx, &jobs).await?)
    }

    async fn committed(&self) {
        self.queue.wake().await;
    }
}

/// `calls.ring` and `calls.miss`: one command on the call each, idempotent (ringing a call that
/// rings, or ringing out one that was answered or is over, records nothing).
struct CallJob {
    calls: Calls,
    kind: &'static str,
}

#[async_trait]
impl Handler for CallJob {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn run(&self, job: &Job) -> Result<(), Failure> {
        let call_id: Uuid = job.args["call_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Failure::new("no call_id in the job's arguments"))?;
        let done = match self.kind {
            RING => {
                let ctx = CommandContext::new(job.account_id, Actor::system());
                self.calls
                    .commands
                    .dispatcher()
                    .execute::<Call>(&ctx, &call_id.to_string(), CallCommand::Ring)
                    .await
            }
            _ => self.calls.ring_out(job.account_id, call_id).await,
        };
        match done {
            Ok(_) | Err(DispatchError::Domain(_)) => Ok(()),
            Err(e) => Err(Failure::new(e.to_string())),
        }
    }
}
