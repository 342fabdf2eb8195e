//! `Stream`: a live stream of an experience. It is scheduled, goes live once (opening its chat),
//! ends once (keeping its peak viewer count in the event, so a rebuild keeps it), and is then
//! archived. Each step is allowed only from the one before: a second `start` is refused, which
//! is how two hosts pressing "go live" together get one winner.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    #[default]
    Scheduled,
    Live,
    Ended,
}

impl StreamState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Live => "live",
            Self::Ended => "ended",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum StreamCommand {
    Schedule {
        stream_id: Uuid,
        experience_id: Uuid,
        account_id: Uuid,
        title: String,
        starts_at: DateTime<Utc>,
        max_participants: Option<i32>,
        by: Uuid,
    },
    Start {
        conversation_id: Uuid,
        by: Uuid,
        at: DateTime<Utc>,
    },
    /// `by` is `None` when the abandoned-stream job ends it.
    End {
        peak_viewers: i64,
        by: Option<Uuid>,
        at: DateTime<Utc>,
    },
    Archive {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StreamEvent {
    #[serde(rename = "StreamScheduled")]
    StreamScheduled {
        stream_id: Uuid,
        experience_id: Uuid,
        account_id: Uuid,
        title: String,
        starts_at: DateTime<Utc>,
        max_participants: Option<i32>,
        /// The media server's room, fixed at creation.
        room_name: String,
        created_by: Uuid,
    },
    #[serde(rename = "StreamStarted")]
    StreamStarted {
        stream_id: Uuid,
        experience_id: Uuid,
        account_id: Uuid,
        conversation_id: Uuid,
        started_by: Uuid,
        started_at: DateTime<Utc>,
    },
    #[serde(rename = "StreamEnded")]
    StreamEnded {
        stream_id: Uuid,
        experience_id: Uuid,
        account_id: Uuid,
        peak_viewers: i64,
        ended_by: Option<Uuid>,
        ended_at: DateTime<Utc>,
    },
    #[serde(rename = "StreamArchived")]
    StreamArchived { stream_id: Uuid, experience_id: Uuid, account_id: Uuid, archived_at: DateTime<Utc> },
}

impl crate::catalog::EventTypes for StreamEvent {
    const TYPES: &'static [&'static str] =
        &["StreamScheduled", "StreamStarted", "StreamEnded", "StreamArchived"];
}

impl DomainEvent for StreamEvent {
    fn event_type(&self) -> String {
        match self {
            StreamEvent::StreamScheduled { .. } => "StreamScheduled",
            StreamEvent::StreamStarted { .. } => "StreamStarted",
            StreamEvent::StreamEnded { .. } => "StreamEnded",
            StreamEvent::StreamArchived { .. } => "StreamArchived",
        }
        .into()
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("the stream already exists")]
    AlreadyCreated,
    #[error("stream not found")]
    NotFound,
    #[error("the stream is {0}: only a scheduled stream can start")]
    NotScheduled(&'static str),
    #[error("the stream is {0}: only a live stream can end")]
    NotLive(&'static str),
    #[error("the stream has not ended")]
    NotEnded,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stream {
    pub id: Option<Uuid>,
    pub experience_id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub state: StreamState,
    pub title: String,
    pub starts_at: Option<DateTime<Utc>>,
    pub room_name: String,
    pub max_participants: Option<i32>,
    pub conversation_id: Option<Uuid>,
    pub host_id: Option<Uuid>,
    pub peak_viewers: i64,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub archived_at: Option<DateTime<Utc>>,
    pub archived: bool,
}

impl Stream {
    /// The stream's id, experience and account, or not found.
    pub fn existing(&self) -> Result<(Uuid, Uuid, Uuid), StreamError> {
        match (self.id, self.experience_id, self.account_id) {
            (Some(id), Some(experience), Some(account)) => Ok((id, experience, account)),
            _ => Err(StreamError::NotFound),
        }
    }
}

impl Aggregate for Stream {
    const TYPE: &'static str = "Stream";
    type Command = StreamCommand;
    type Event = StreamEvent;
    type Error = StreamError;
    type Services = ();

    async fn handle(
        &mut self,
        command: StreamCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), StreamError> {
        match command {
            StreamCommand::Schedule {
                stream_id,
                experience_id,
                account_id,
                title,
                starts_at,
                max_participants,
                by,
            } => {
                if self.id.is_some() {
                    return Err(StreamError::AlreadyCreated);
                }
                let e = StreamEvent::StreamScheduled {
                    stream_id,
                    experience_id,
                    account_id,
                    title,
                    starts_at,
                    max_participants,
                    room_name: format!("stream-{stream_id}"),
                    created_by: by,
                };
                sink.write(e, self).await;
            }
            StreamCommand::Start { conversation_id, by, at } => {
                let (stream_id, experience_id, account_id) = self.existing()?;
                if self.state != StreamState::Scheduled {
                    return Err(StreamError::NotScheduled(self.state.name()));
                }
                let e = StreamEvent::StreamStarted {
                    stream_id,
                    experience_id,
                    account_id,
                    conversation_id,
                    started_by: by,
                    started_at: at,
                };
                sink.write(e, self).await;
            }
            StreamCommand::End { peak_viewers, by, at } => {
                let (stream_id, experience_id, account_id) = self.existing()?;
                if self.state != StreamState::Live {
                    return Err(StreamError::NotLive(self.state.name()));
                }
                let e = StreamEvent::StreamEnded {
                    stream_id,
                    experience_id,
                    account_id,
                    peak_viewers,
                    ended_by: by,
                    ended_at: at,
                };
                sink.write(e, self).await;
            }
            StreamCommand::Archive { at } => {
                let (stream_id, experience_id, account_id) = self.existing()?;
                if self.state != StreamState::Ended {
                    return Err(StreamError::NotEnded);
                }
                // Archiving twice (a job retried) records it once.
                if !self.archived {
                    let e =
                        StreamEvent::StreamArchived { stream_id, experience_id, account_id, archived_at: at };
                    sink.write(e, self).await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::StreamScheduled {
                stream_id,
                experience_id,
                account_id,
                title,
                starts_at,
                max_participants,
                room_name,
                ..
            } => {
                self.id = Some(stream_id);
                self.title = title;
                self.starts_at = Some(starts_at);
                self.experience_id = Some(experience_id);
                self.account_id = Some(account_id);
                self.max_participants = max_participants;
                self.room_name = room_name;
            }
            StreamEvent::StreamStarted { conversation_id, started_by, started_at, .. } => {
                self.state = StreamState::Live;
                self.conversation_id = Some(conversation_id);
                self.host_id = Some(started_by);
                self.started_at = Some(started_at);
            }
            StreamEvent::StreamEnded { peak_viewers, ended_at, .. } => {
                self.state = StreamState::Ended;
                self.peak_viewers = peak_viewers;
                self.ended_at = Some(ended_at);
            }
            StreamEvent::StreamArchived { archived_at, .. } => {
                self.archived = true;
                self.archived_at = Some(archived_at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type Given = TestFramework<Stream>;

    fn at() -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH
    }

    fn ids() -> (Uuid, Uuid, Uuid) {
        (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3))
    }

    fn scheduled() -> StreamEvent {
        let (stream_id, experience_id, account_id) = ids();
        StreamEvent::StreamScheduled {
            stream_id,
            experience_id,
            account_id,
            title: "Launch".into(),
            starts_at: DateTime::<Utc>::MIN_UTC,
            max_participants: Some(10),
            room_name: format!("stream-{stream_id}"),
            created_by: Uuid::nil(),
        }
    }

    fn started() -> StreamEvent {
        let (stream_id, experience_id, account_id) = ids();
        StreamEvent::StreamStarted {
            stream_id,
            experience_id,
            account_id,
            conversation_id: Uuid::from_u128(9),
            started_by: Uuid::nil(),
            started_at: at(),
        }
    }

    fn ended() -> StreamEvent {
        let (stream_id, experience_id, account_id) = ids();
        StreamEvent::StreamEnded {
            stream_id,
            experience_id,
            account_id,
            peak_viewers: 7,
            ended_by: None,
            ended_at: at(),
        }
    }

    #[test]
    fn a_scheduled_stream_starts_once() {
        Given::with(())
            .given(vec![scheduled()])
            .when(StreamCommand::Start { conversation_id: Uuid::from_u128(9), by: Uuid::nil(), at: at() })
            .then_expect_events(vec![started()]);
        Given::with(())
            .given(vec![scheduled(), started()])
            .when(StreamCommand::Start { conversation_id: Uuid::from_u128(10), by: Uuid::nil(), at: at() })
            .then_expect_error(StreamError::NotScheduled("live"));
        Given::with(())
            .given(vec![scheduled(), started(), ended()])
            .when(StreamCommand::Start { conversation_id: Uuid::from_u128(10), by: Uuid::nil(), at: at() })
            .then_expect_error(StreamError::NotScheduled("ended"));
    }

    #[test]
    fn only_a_live_stream_ends_and_the_end_keeps_its_peak() {
        Given::with(())
            .given(vec![scheduled()])
            .when(StreamCommand::End { peak_viewers: 3, by: None, at: at() })
            .then_expect_error(StreamError::NotLive("scheduled"));
        Given::with(())
            .given(vec![scheduled(), started()])
            .when(StreamCommand::End { peak_viewers: 7, by: None, at: at() })
            .then_expect_events(vec![ended()]);
    }

    #[test]
    fn an_ended_stream_is_archived_once() {
        let (stream_id, experience_id, account_id) = ids();
        let archived =
            StreamEvent::StreamArchived { stream_id, experience_id, account_id, archived_at: at() };
        Given::with(())
            .given(vec![scheduled(), started(), ended()])
            .when(StreamCommand::Archive { at: at() })
            .then_expect_events(vec![archived.clone()]);
        Given::with(())
            .given(vec![scheduled(), started(), ended(), archived])
            .when(StreamCommand::Archive { at: at() })
            .then_expect_events(vec![]);
        Given::with(())
            .given(vec![scheduled(), started()])
            .when(StreamCommand::Archive { at: at() })
            .then_expect_error(StreamError::NotEnded);
    }
}
