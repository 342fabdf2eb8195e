//! The call's write side: the claim that keeps one live call per conversation.

use parley_aggregates::call::{Call, CallCommand, CallEvent};
use parley_eventstore::claims::{self, ClaimOutcome};
use parley_eventstore::StreamKey;
use sqlx::PgConnection;
use uuid::Uuid;

use super::WriteSide;
use crate::calls::LIVE_CALL_CLAIM;
use crate::error::DispatchError;

/// One live call per conversation: claimed when a call starts, released when it ends or is missed.
impl WriteSide for Call {
    fn creates_stream(command: &CallCommand) -> bool {
        matches!(command, CallCommand::Start { .. })
    }

    fn writes_rows(events: &[CallEvent]) -> bool {
        events.iter().any(|event| live_call_claim(event).is_some())
    }

    async fn write_side(
        conn: &mut PgConnection,
        account_id: Uuid,
        stream: &StreamKey,
        events: &[CallEvent],
    ) -> Result<(), DispatchError> {
        for (claimed, conversation_id) in events.iter().filter_map(live_call_claim) {
            let value = conversation_id.to_string();
            if !claimed {
                claims::release(conn, LIVE_CALL_CLAIM, &value, stream).await?;
            } else if let ClaimOutcome::Taken(holder) =
                claims::claim(conn, account_id, LIVE_CALL_CLAIM, &value, stream).await?
            {
                return Err(DispatchError::Claimed { kind: LIVE_CALL_CLAIM, holder });
            }
        }
        Ok(())
    }
}

/// What a call event does to its conversation's live-call claim (one live call per
/// conversation): `(true, conversation)` claims it, `(false, conversation)` releases it.
fn live_call_claim(event: &CallEvent) -> Option<(bool, Uuid)> {
    match event {
        CallEvent::CallStarted { conversation_id, .. } => Some((true, *conversation_id)),
        CallEvent::CallEnded { conversation_id, .. } | CallEvent::CallMissed { conversation_id, .. } => {
            Some((false, *conversation_id))
        }
        _ => None,
    }
}
