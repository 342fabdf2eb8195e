//! Events travel as `(event_type, payload)`: the payload is the variant's fields alone, so the
//! log, the audit API and WebSocket frames carry plain objects.

use cqrs_es::DomainEvent;
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("event did not serialize as a single-variant object: {0}")]
    Shape(String),
    #[error("payload of {event_type} does not decode: {source}")]
    Decode { event_type: String, source: serde_json::Error },
}

/// Splits a serialized event into its type and its fields.
pub fn to_payload<E: DomainEvent>(event: &E) -> Result<(String, Value), PayloadError> {
    let value = serde_json::to_value(event).map_err(|e| PayloadError::Shape(e.to_string()))?;
    match value {
        Value::Object(map) if map.len() == 1 => {
            let (name, payload) =
                map.into_iter().next().ok_or_else(|| PayloadError::Shape("empty".into()))?;
            Ok((name, payload))
        }
        other => Err(PayloadError::Shape(other.to_string())),
    }
}

/// Rebuilds an event from its type and fields.
pub fn from_payload<E: DomainEvent>(event_type: &str, payload: &Value) -> Result<E, PayloadError> {
    let mut map = Map::with_capacity(1);
    map.insert(event_type.to_owned(), payload.clone());
    serde_json::from_value(Value::Object(map))
        .map_err(|source| PayloadError::Decode { event_type: event_type.to_owned(), source })
}

/// Test helper: given one example of each variant, their `event_type()`s must be exactly the
/// types the catalog lists for the enum, and each must round-trip ([`assert_round_trips`]).
#[cfg(test)]
pub(crate) fn assert_stored_names<E: DomainEvent + crate::catalog::EventTypes>(events: &[E]) {
    let mut named: Vec<String> = events.iter().map(|e| e.event_type()).collect();
    named.sort();
    named.dedup();
    let mut listed: Vec<String> = E::TYPES.iter().map(|t| t.to_string()).collect();
    listed.sort();
    assert_eq!(named, listed, "the examples and the catalog's list of event types differ");
    assert_round_trips(events);
}

/// Test helper: every event's serde tag must equal its `event_type()`, and it must decode back.
#[cfg(test)]
pub(crate) fn assert_round_trips<E: DomainEvent>(events: &[E]) {
    for e in events {
        let (name, _) = to_payload(e).expect("event serializes");
        assert_eq!(name, e.event_type(), "serde tag and event_type differ");
        let back: E = from_payload(&name, &to_payload(e).expect("serializes").1).expect("round trip");
        assert_eq!(&back, e);
    }
}
