//! What a connection relays between users without storing it: WebRTC signals, media changes
//! and typing, each checked (participants, members, a token bucket) and published to every node.

use parley_aggregates::call::{Call, ParticipantState};
use parley_aggregates::conversation::Conversation;
use serde_json::json;
use uuid::Uuid;

use super::Connection;

/// Signals, media changes and typing a connection may send: a burst, then this many a second.
const SIGNAL_BURST: f64 = 100.0;
const SIGNALS_PER_SECOND: f64 = 50.0;
/// Typing is relayed at most once a second per user and conversation.
const TYPING_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A token bucket.
pub(super) struct Bucket {
    tokens: f64,
    at: std::time::Instant,
}

impl Bucket {
    pub(super) fn new() -> Self {
        Self { tokens: SIGNAL_BURST, at: std::time::Instant::now() }
    }

    fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * SIGNALS_PER_SECOND).min(SIGNAL_BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why a relayed command was not relayed: its error frame's code and message.
pub(super) type Refusal = Option<(&'static str, &'static str)>;

impl Connection {
    /// The live call `call_id` of this account and who is in it (invited or joined), with the
    /// caller among them; else the refusal.
    async fn call_with_me(
        &mut self,
        call_id: &str,
    ) -> Result<(Uuid, Vec<Uuid>), (&'static str, &'static str)> {
        let me = self.principal.user_id().map_err(|_| ("forbidden", "only users take part in calls"))?;
        if !self.bucket.take() {
            return Err(("rate_limited", "too many signals: slow down"));
        }
        let call_id: Uuid = call_id.parse().map_err(|_| ("not_found", "no such call"))?;
        let loaded = self.app.commands.dispatcher().load::<Call>(&call_id.to_string()).await;
        let call = match loaded {
            Ok(Some(c)) if c.account_id == self.principal.account_id() && c.aggregate.live() => c.aggregate,
            Ok(_) => return Err(("not_found", "no such call")),
            Err(_) => return Err(("service_unavailable", "the call could not be read; try again")),
        };
        let present: Vec<Uuid> = call
            .participants
            .iter()
            .filter(|(_, s)| matches!(s, ParticipantState::Invited | ParticipantState::Joined))
            .map(|(id, _)| *id)
            .collect();
        if !present.contains(&me) {
            return Err(("forbidden", "you are not in this call"));
        }
        Ok((me, present))
    }

    /// Relays a WebRTC signal to another participant of the call.
    pub(super) async fn signal(&mut self, call_id: &str, to: &str, signal: serde_json::Value) -> Refusal {
        if !matches!(signal.get("type").and_then(|t| t.as_str()), Some("offer" | "answer" | "ice")) {
            return Some(("bad_request", "signal.type must be offer, answer or ice"));
        }
        let (me, present) = match self.call_with_me(call_id).await {
            Ok(found) => found,
            Err(refused) => return Some(refused),
        };
        let Some(to) = to.parse::<Uuid>().ok().filter(|to| present.contains(to) && *to != me) else {
            return Some(("forbidden", "signals go only to another participant of the call"));
        };
        let frame = json!({"type": "signal", "call_id": call_id, "from_user_id": me, "signal": signal});
        self.publish(&[to], frame).await
    }

    /// Relays a mute or camera change to the call's other participants; never stored.
    pub(super) async fn call_media(
        &mut self,
        call_id: &str,
        muted: Option<bool>,
        camera_off: Option<bool>,
    ) -> Refusal {
        let (me, present) = match self.call_with_me(call_id).await {
            Ok(found) => found,
            Err(refused) => return Some(refused),
        };
        let others: Vec<Uuid> = present.into_iter().filter(|p| *p != me).collect();
        let frame = json!({"type": "call_media", "call_id": call_id, "user_id": me, "muted": muted, "camera_off": camera_off});
        self.publish(&others, frame).await
    }

    /// Relays typing to the conversation's other members, at most once a second.
    pub(super) async fn typing(&mut self, conversation_id: &str) -> Refusal {
        let Ok(me) = self.principal.user_id() else { return Some(("forbidden", "only users type")) };
        let Ok(conversation_id) = conversation_id.parse::<Uuid>() else {
            return Some(("not_found", "no such conversation"));
        };
        let now = std::time::Instant::now();
        if self.typed.get(&conversation_id).is_some_and(|at| now.duration_since(*at) < TYPING_EVERY) {
            return None;
        }
        let loaded = self.app.commands.dispatcher().load::<Conversation>(&conversation_id.to_string()).await;
        let members: Vec<Uuid> = match loaded {
            Ok(Some(c)) if c.account_id == self.principal.account_id() && c.aggregate.is_member(me) => {
                c.aggregate.members.keys().copied().filter(|m| *m != me).collect()
            }
            Ok(_) => return Some(("not_found", "no such conversation")),
            Err(_) => return Some(("service_unavailable", "the conversation could not be read; try again")),
        };
        self.typed.insert(conversation_id, now);
        let frame = json!({"type": "typing", "conversation_id": conversation_id, "user_id": me});
        self.publish(&members, frame).await
    }

    async fn publish(&self, to: &[Uuid], frame: serde_json::Value) -> Refusal {
        if to.is_empty() {
            return None;
        }
        match self.live.signals.publish(to, frame).await {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(error = %e, "could not publish a signal");
                Some(("service_unavailable", "the signal could not be sent; try again"))
            }
        }
    }
}
