//! Calls of each conversation, with their participants: the history, the live call for late
//! joiners, and every command's answer.

use async_trait::async_trait;
use parley_aggregates::call::{state, CallEvent};
use parley_eventstore::RecordedEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use super::decode;
use crate::error::ProjectionError;
use crate::projection::{Decisions, Projection};
use crate::reads::ReadModel;

pub mod query;

pub struct CallsProjection;

#[async_trait]
impl Projection for CallsProjection {
    fn name(&self) -> &'static str {
        ReadModel::Calls.name()
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["calls", "call_participants"]
    }

    fn schema(&self) -> &'static str {
        r#"
        CREATE TABLE calls (
            id              uuid PRIMARY KEY,
            account_id      uuid NOT NULL,
            conversation_id uuid NOT NULL,
            kind            text NOT NULL,
            state           text NOT NULL,
            initiator_id    uuid NOT NULL,
            created_at      timestamptz NOT NULL,
            started_at      timestamptz,
            ended_at        timestamptz,
            duration_s      bigint,
            version         bigint NOT NULL
        );
        CREATE INDEX calls_conversation_idx ON calls (conversation_id, created_at DESC, id);
        CREATE INDEX calls_live_idx ON calls (conversation_id) WHERE state IN ('calling', 'ringing', 'active');
        CREATE TABLE call_participants (
            call_id   uuid NOT NULL,
            user_id   uuid NOT NULL,
            state     text NOT NULL,
            joined_at timestamptz,
            left_at   timestamptz,
            PRIMARY KEY (call_id, user_id)
        );
        "#
    }

    /// A conversation's calls and its live one are queries'; a batch finds a call by id.
    fn deferred_indexes(&self) -> &'static [&'static str] {
        &["calls_conversation_idx", "calls_live_idx"]
    }

    fn decides(&self) -> Decisions {
        Decisions {
            handles: &[
                "CallStarted",
                "CallRinging",
                "CallAccepted",
                "CallDeclined",
                "CallParticipantLeft",
                "CallEnded",
                "CallMissed",
            ],
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
                "WebhookSubscription",
                "IncomingWebhook",
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
            apply(conn, e, decode::<CallEvent>(e)?).await?;
        }
        Ok(())
    }
}

async fn apply(conn: &mut PgConnection, e: &RecordedEvent, event: CallEvent) -> Result<(), ProjectionError> {
    match event {
        CallEvent::CallStarted { call_id, account_id, conversation_id, kind, initiator_id, callee_ids } => {
            sqlx::query(
                "INSERT INTO calls (id, account_id, conversation_id, kind, state, initiator_id, created_at, version) \
                 VALUES ($1, $2, $3, $4, 'calling', $5, $6, $7)",
            )
            .bind(call_id)
            .bind(account_id)
            .bind(conversation_id)
            .bind(kind)
            .bind(initiator_id)
            .bind(e.recorded_at)
            .bind(e.version)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO call_participants (call_id, user_id, state, joined_at) \
                 SELECT $1, u, CASE WHEN u = $2 THEN 'joined' ELSE 'invited' END, \
                        CASE WHEN u = $2 THEN $4 END \
                 FROM unnest(array_prepend($2, $3::uuid[])) AS u",
            )
            .bind(call_id)
            .bind(initiator_id)
            .bind(&callee_ids)
            .bind(e.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        CallEvent::CallRinging { call_id, .. } => {
            sqlx::query("UPDATE calls SET state = $2, version = $3 WHERE id = $1")
                .bind(call_id)
                .bind(state::RINGING)
                .bind(e.version)
                .execute(&mut *conn)
                .await?;
        }
        CallEvent::CallAccepted { call_id, user_id, at, .. } => {
            participant(conn, e, call_id, user_id, "joined").await?;
            sqlx::query(
                "UPDATE calls SET state = 'active', started_at = COALESCE(started_at, $2), version = $3 WHERE id = $1",
            )
            .bind(call_id)
            .bind(at)
            .bind(e.version)
            .execute(&mut *conn)
            .await?;
        }
        CallEvent::CallDeclined { call_id, user_id, .. } => {
            participant(conn, e, call_id, user_id, "declined").await?;
            sqlx::query("UPDATE calls SET version = $2 WHERE id = $1")
                .bind(call_id)
                .bind(e.version)
                .execute(&mut *conn)
                .await?;
        }
        CallEvent::CallParticipantLeft { call_id, user_id, .. } => {
            participant(conn, e, call_id, user_id, "left").await?;
            sqlx::query("UPDATE calls SET version = $2 WHERE id = $1")
                .bind(call_id)
                .bind(e.version)
                .execute(&mut *conn)
                .await?;
        }
        CallEvent::CallEnded { call_id, state, at, duration_s, .. } => {
            sqlx::query(
                "UPDATE calls SET state = $2, ended_at = $3, duration_s = $4, version = $5 WHERE id = $1",
            )
            .bind(call_id)
            .bind(state)
            .bind(at)
            .bind(duration_s)
            .bind(e.version)
            .execute(&mut *conn)
            .await?;
        }
        CallEvent::CallMissed { call_id, at, .. } => {
            sqlx::query("UPDATE calls SET state = 'missed', ended_at = $2, duration_s = 0, version = $3 WHERE id = $1")
                .bind(call_id)
                .bind(at)
                .bind(e.version)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// Moves a participant to `state` (stamping when they joined or left) and the call's version.
async fn participant(
    conn: &mut PgConnection,
    e: &RecordedEvent,
    call_id: Uuid,
    user_id: Uuid,
    state: &str,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "UPDATE call_participants SET state = $3, \
            joined_at = CASE WHEN $3 = 'joined' THEN $4 ELSE joined_at END, \
            left_at = CASE WHEN $3 = 'left' THEN $4 ELSE left_at END \
         WHERE call_id = $1 AND user_id = $2",
    )
    .bind(call_id)
    .bind(user_id)
    .bind(state)
    .bind(e.recorded_at)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE calls SET version = $2 WHERE id = $1")
        .bind(call_id)
        .bind(e.version)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
