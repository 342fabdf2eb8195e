//! The `Call` aggregate: an audio or video call in a conversation. Its caller is in it from the
//! start; each callee accepts or declines; it ends when the last participant leaves, when the
//! caller cancels before anyone accepted, when every callee declined (`declined`), or when nobody
//! accepted in time (`missed`). Every decision, the ring timer's included, is taken here under
//! the call's stream lock, so an accept and the timer cannot both win.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub enum CallCommand {
    Start {
        call_id: Uuid,
        account_id: Uuid,
        conversation_id: Uuid,
        /// `audio` or `video` (checked by the caller).
        kind: String,
        initiator_id: Uuid,
        /// The conversation's other members (read by the caller from the conversation).
        callee_ids: Vec<Uuid>,
    },
    /// The callees were told (by the ringing process manager).
    Ring,
    Accept {
        user_id: Uuid,
        at: DateTime<Utc>,
    },
    Decline {
        user_id: Uuid,
        at: DateTime<Utc>,
    },
    HangUp {
        user_id: Uuid,
        at: DateTime<Utc>,
    },
    /// The ring timer ran out; does nothing if anyone accepted first or the call is over.
    Miss {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CallEvent {
    #[serde(rename = "CallStarted")]
    CallStarted {
        call_id: Uuid,
        account_id: Uuid,
        conversation_id: Uuid,
        kind: String,
        initiator_id: Uuid,
        callee_ids: Vec<Uuid>,
    },
    #[serde(rename = "CallRinging")]
    CallRinging {
        call_id: Uuid,
        conversation_id: Uuid,
        kind: String,
        initiator_id: Uuid,
        callee_ids: Vec<Uuid>,
    },
    #[serde(rename = "CallAccepted")]
    CallAccepted {
        call_id: Uuid,
        conversation_id: Uuid,
        initiator_id: Uuid,
        user_id: Uuid,
        at: DateTime<Utc>,
    },
    #[serde(rename = "CallDeclined")]
    CallDeclined {
        call_id: Uuid,
        conversation_id: Uuid,
        initiator_id: Uuid,
        user_id: Uuid,
        at: DateTime<Utc>,
    },
    #[serde(rename = "CallParticipantLeft")]
    CallParticipantLeft {
        call_id: Uuid,
        conversation_id: Uuid,
        initiator_id: Uuid,
        user_id: Uuid,
        at: DateTime<Utc>,
    },
    /// `state` is `ended` or `declined`.
    #[serde(rename = "CallEnded")]
    CallEnded {
        call_id: Uuid,
        conversation_id: Uuid,
        initiator_id: Uuid,
        callee_ids: Vec<Uuid>,
        state: String,
        at: DateTime<Utc>,
        duration_s: i64,
    },
    /// `callee_ids`: those who never answered (each gets a missed-call notification).
    #[serde(rename = "CallMissed")]
    CallMissed {
        call_id: Uuid,
        conversation_id: Uuid,
        initiator_id: Uuid,
        callee_ids: Vec<Uuid>,
        at: DateTime<Utc>,
    },
}

impl crate::catalog::EventTypes for CallEvent {
    const TYPES: &'static [&'static str] = &[
        "CallStarted",
        "CallRinging",
        "CallAccepted",
        "CallDeclined",
        "CallParticipantLeft",
        "CallEnded",
        "CallMissed",
    ];
}

impl DomainEvent for CallEvent {
    fn event_type(&self) -> String {
        match self {
            CallEvent::CallStarted { .. } => "CallStarted",
            CallEvent::CallRinging { .. } => "CallRinging",
            CallEvent::CallAccepted { .. } => "CallAccepted",
            CallEvent::CallDeclined { .. } => "CallDeclined",
            CallEvent::CallParticipantLeft { .. } => "CallParticipantLeft",
            CallEvent::CallEnded { .. } => "CallEnded",
            CallEvent::CallMissed { .. } => "CallMissed",
        }
        .into()
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the call already exists")]
    AlreadyStarted,
    #[error("the call does not exist")]
    NotFound,
    #[error("you were not invited to this call")]
    NotInvited,
    #[error("you are not in this call")]
    NotAParticipant,
    #[error("the call is over")]
    Over,
    #[error("you already answered this call")]
    AlreadyAnswered,
}

/// Where a participant is in the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantState {
    Invited,
    Joined,
    Declined,
    Left,
}

/// The call's state: `calling`, `ringing`, `active`, `ended`, `declined` or `missed`.
pub mod state {
    pub const CALLING: &str = "calling";
    pub const RINGING: &str = "ringing";
    pub const ACTIVE: &str = "active";
    pub const ENDED: &str = "ended";
    pub const DECLINED: &str = "declined";
    pub const MISSED: &str = "missed";
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub conversation_id: Option<Uuid>,
    pub kind: String,
    pub state: String,
    pub initiator_id: Option<Uuid>,
    /// Everyone in the call: the caller (joined from the start) and each callee.
    pub participants: BTreeMap<Uuid, ParticipantState>,
    pub started_at: Option<DateTime<Utc>>,
}

impl Call {
    /// Whether the call can still change: calling, ringing or active.
    pub fn live(&self) -> bool {
        matches!(self.state.as_str(), state::CALLING | state::RINGING | state::ACTIVE)
    }

    fn ids(&self) -> Result<(Uuid, Uuid, Uuid), CallError> {
        match (self.id, self.conversation_id, self.initiator_id) {
            (Some(call), Some(conversation), Some(initiator)) => Ok((call, conversation, initiator)),
            _ => Err(CallError::NotFound),
        }
    }

    fn callees(&self) -> impl Iterator<Item = (&Uuid, &ParticipantState)> {
        let initiator = self.initiator_id;
        self.participants.iter().filter(move |(id, _)| Some(**id) != initiator)
    }

    fn callee_ids(&self) -> Vec<Uuid> {
        self.callees().map(|(id, _)| *id).collect()
    }

    /// The decisions of `command`, as events.
    fn decide(&self, command: CallCommand) -> Result<Vec<CallEvent>, CallError> {
        use CallCommand as C;
        use CallEvent as E;
        if let C::Start { call_id, account_id, conversation_id, kind, initiator_id, mut callee_ids } = command
        {
            if self.id.is_some() {
                return Err(CallError::AlreadyStarted);
            }
            callee_ids.retain(|c| *c != initiator_id);
            callee_ids.sort();
            callee_ids.dedup();
            return Ok(vec![E::CallStarted {
                call_id,
                account_id,
                conversation_id,
                kind,
                initiator_id,
                callee_ids,
            }]);
        }
        let (call_id, conversation_id, initiator_id) = self.ids()?;
        match command {
            C::Start { .. } => Ok(vec![]),
            C::Ring => Ok(if self.state == state::CALLING {
                vec![E::CallRinging {
                    call_id,
                    conversation_id,
                    kind: self.kind.clone(),
                    initiator_id,
                    callee_ids: self.callee_ids(),
                }]
            } else {
                vec![]
            }),
            C::Accept { user_id, at } => {
                self.answerable(user_id)?;
                Ok(vec![E::CallAccepted { call_id, conversation_id, initiator_id, user_id, at }])
            }
            C::Decline { user_id, at } => {
                self.answerable(user_id)?;
                let mut events =
                    vec![E::CallDeclined { call_id, conversation_id, initiator_id, user_id, at }];
                let everyone_declined = self.state != state::ACTIVE
                    && self.callees().all(|(id, s)| *id == user_id || *s == ParticipantState::Declined);
                if everyone_declined {
                    events.push(E::CallEnded {
                        call_id,
                        conversation_id,
                        initiator_id,
                        callee_ids: self.callee_ids(),
                        state: state::DECLINED.into(),
                        at,
                        duration_s: 0,
                    });
                }
                Ok(events)
            }
            C::HangUp { user_id, at } => {
                if self.participants.get(&user_id) != Some(&ParticipantState::Joined) {
                    return Err(if self.participants.contains_key(&user_id) && !self.live() {
                        CallError::Over
                    } else {
                        CallError::NotAParticipant
                    });
                }
                if !self.live() {
                    return Err(CallError::Over);
                }
                let mut events =
                    vec![E::CallParticipantLeft { call_id, conversation_id, initiator_id, user_id, at }];
                let cancelled = self.state != state::ACTIVE && user_id == initiator_id;
                let nobody_left =
                    self.participants.iter().all(|(id, s)| *id == user_id || *s != ParticipantState::Joined);
                if cancelled || nobody_left {
                    let duration_s = self.started_at.map_or(0, |started| (at - started).num_seconds().max(0));
                    events.push(E::CallEnded {
                        call_id,
                        conversation_id,
                        initiator_id,
                        callee_ids: self.callee_ids(),
                        state: state::ENDED.into(),
                        at,
                        duration_s,
                    });
                }
                Ok(events)
            }
            C::Miss { at } => {
                let unanswered = matches!(self.state.as_str(), state::CALLING | state::RINGING);
                Ok(if unanswered {
                    let callee_ids = self
                        .callees()
                        .filter(|(_, s)| **s == ParticipantState::Invited)
                        .map(|(id, _)| *id)
                        .collect();
                    vec![E::CallMissed { call_id, conversation_id, initiator_id, callee_ids, at }]
                } else {
                    vec![]
                })
            }
        }
    }

    /// A callee may accept or decline once, while the call lives.
    fn answerable(&self, user_id: Uuid) -> Result<(), CallError> {
        match self.participants.get(&user_id) {
            None => Err(CallError::NotInvited),
            Some(_) if Some(user_id) == self.initiator_id => Err(CallError::NotInvited),
            Some(_) if !self.live() => Err(CallError::Over),
            Some(ParticipantState::Invited) => Ok(()),
            Some(_) => Err(CallError::AlreadyAnswered),
        }
    }
}

impl Aggregate for Call {
    const TYPE: &'static str = "Call";
    type Command = CallCommand;
    type Event = CallEvent;
    type Error = CallError;
    type Services = ();

    async fn handle(
        &mut self,
        command: CallCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), CallError> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: CallEvent) {
        match event {
            CallEvent::CallStarted {
                call_id,
                account_id,
                conversation_id,
                kind,
                initiator_id,
                callee_ids,
            } => {
                self.id = Some(call_id);
                self.account_id = Some(account_id);
                self.conversation_id = Some(conversation_id);
                self.kind = kind;
                self.state = state::CALLING.into();
                self.initiator_id = Some(initiator_id);
                self.participants.insert(initiator_id, ParticipantState::Joined);
                for callee in callee_ids {
                    self.participants.insert(callee, ParticipantState::Invited);
                }
            }
            CallEvent::CallRinging { .. } => self.state = state::RINGING.into(),
            CallEvent::CallAccepted { user_id, at, .. } => {
                self.participants.insert(user_id, ParticipantState::Joined);
                self.state = state::ACTIVE.into();
                self.started_at.get_or_insert(at);
            }
            CallEvent::CallDeclined { user_id, .. } => {
                self.participants.insert(user_id, ParticipantState::Declined);
            }
            CallEvent::CallParticipantLeft { user_id, .. } => {
                self.participants.insert(user_id, ParticipantState::Left);
            }
            CallEvent::CallEnded { state, .. } => self.state = state,
            CallEvent::CallMissed { .. } => self.state = state::MISSED.into(),
        }
    }
}

#[cfg(test)]
mod tests;
