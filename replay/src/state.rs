//! An aggregate as it was: its events up to a version or a time, folded with the same `apply`
//! the write side uses.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use parley_aggregates::account::Account;
use parley_aggregates::analytics::AnalyticsDay;
use parley_aggregates::api_key::ApiKey;
use parley_aggregates::call::Call;
use parley_aggregates::catalog;
use parley_aggregates::conversation::Conversation;
use parley_aggregates::creator::{AccessGrant, Experience, Space, Stream};
use parley_aggregates::from_payload;
use parley_aggregates::inbox::Inbox;
use parley_aggregates::invitation::Invitation;
use parley_aggregates::role::Role;
use parley_aggregates::secrets::redact;
use parley_aggregates::session::Session;
use parley_aggregates::user::User;
use parley_aggregates::webhook::{IncomingWebhook, WebhookSubscription};
use parley_eventstore::{EventStore, RecordedEvent, StreamKey};
use serde_json::Value;

use crate::error::ReplayError;
use crate::events::redacted;

/// Which past state to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// After every event.
    Latest,
    /// After the event with this version.
    Version(i64),
    /// After every event recorded at or before this time.
    Time(DateTime<Utc>),
}

/// A past state and the events that produced it.
#[derive(Clone, Debug)]
pub struct StateAsOf {
    pub stream_type: String,
    pub stream_id: String,
    pub version: i64,
    pub state: Value,
    pub events: Vec<RecordedEvent>,
}

/// The state of `stream_type/stream_id` as of `as_of`, secrets redacted.
pub async fn state(
    store: &EventStore,
    stream_type: &str,
    stream_id: &str,
    as_of: AsOf,
) -> Result<StateAsOf, ReplayError> {
    if !catalog::is_stream_type(stream_type) {
        return Err(ReplayError::UnknownStreamType(stream_type.to_owned()));
    }
    let stream = StreamKey::new(stream_type, stream_id);
    let up_to = match as_of {
        AsOf::Version(v) => Some(v),
        _ => None,
    };
    let mut events = store.read_stream(&stream, 0, up_to).await?;
    if let AsOf::Time(t) = as_of {
        events.retain(|e| e.recorded_at <= t);
    }
    if events.is_empty() {
        return Err(ReplayError::EmptyStream(stream.to_string()));
    }
    let mut state = match stream_type {
        Account::TYPE => fold::<Account>(&events)?,
        User::TYPE => fold::<User>(&events)?,
        Session::TYPE => fold::<Session>(&events)?,
        Invitation::TYPE => fold::<Invitation>(&events)?,
        Conversation::TYPE => fold::<Conversation>(&events)?,
        Role::TYPE => fold::<Role>(&events)?,
        ApiKey::TYPE => fold::<ApiKey>(&events)?,
        Inbox::TYPE => fold::<Inbox>(&events)?,
        WebhookSubscription::TYPE => fold::<WebhookSubscription>(&events)?,
        IncomingWebhook::TYPE => fold::<IncomingWebhook>(&events)?,
        Call::TYPE => fold::<Call>(&events)?,
        AnalyticsDay::TYPE => fold::<AnalyticsDay>(&events)?,
        Space::TYPE => fold::<Space>(&events)?,
        Experience::TYPE => fold::<Experience>(&events)?,
        Stream::TYPE => fold::<Stream>(&events)?,
        AccessGrant::TYPE => fold::<AccessGrant>(&events)?,
        other => return Err(ReplayError::UnknownStreamType(other.to_owned())),
    };
    redact(&mut state);
    Ok(StateAsOf {
        stream_type: stream_type.to_owned(),
        stream_id: stream_id.to_owned(),
        version: events.last().map_or(0, |e| e.version),
        state,
        events: events.into_iter().map(redacted).collect(),
    })
}

fn fold<A: Aggregate>(events: &[RecordedEvent]) -> Result<Value, ReplayError> {
    let mut aggregate = A::default();
    for e in events {
        aggregate.apply(from_payload(&e.event_type, &e.payload)?);
    }
    serde_json::to_value(&aggregate)
        .map_err(|e| ReplayError::Payload(parley_aggregates::PayloadError::Shape(e.to_string())))
}
