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

/// Test helper: every event's serde tag must equal its `event_type()`.
#[cfg(test)]
pub(crate) fn assert_stored_names<E: DomainEvent>(events: &[E]) {
    for e in events {
        let (name, _) = to_payload(e).expect("event serializes");
        assert_eq!(name, e.event_type(), "serde tag and event_type differ");
        let back: E = from_payload(&name, &to_payload(e).expect("serializes").1).expect("round trip");
        assert_eq!(&back, e);
    }
}
