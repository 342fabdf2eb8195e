//! The per-stream hash chain (DESIGN.md, invariant 5).
//!
//! `hash = sha256(prev_hash ‖ canonical bytes)`, the first event of a stream chaining from
//! [`GENESIS`]. The canonical bytes are defined here and only here: the writer sends them to
//! `parley_append_one`, which chains them in the database, and `replay verify` recomputes them from
//! the stored columns. They cover every stored fact of an event but its place in the global order
//! (`position`, `transaction_id`), which import may legitimately renumber.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The `prev_hash` of a stream's first event.
pub const GENESIS: [u8; 32] = [0; 32];

/// The facts of one event that its hash covers.
pub struct CanonicalEvent<'a> {
    pub stream_type: &'a str,
    pub stream_id: &'a str,
    pub version: i64,
    pub event_type: &'a str,
    pub schema_version: i32,
    pub event_id: Uuid,
    pub account_id: Uuid,
    pub payload: &'a Value,
    pub metadata: &'a Value,
    pub recorded_at: DateTime<Utc>,
}

/// The canonical bytes of an event: a compact JSON object with keys sorted at every level.
pub fn canonical_bytes(e: &CanonicalEvent<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"account_id\":\"");
    out.extend_from_slice(e.account_id.hyphenated().to_string().as_bytes());
    out.extend_from_slice(b"\",\"event_id\":\"");
    out.extend_from_slice(e.event_id.hyphenated().to_string().as_bytes());
    out.extend_from_slice(b"\",\"event_type\":");
    write_string(&mut out, e.event_type);
    out.extend_from_slice(b",\"metadata\":");
    write_canonical(&mut out, e.metadata);
    out.extend_from_slice(b",\"payload\":");
    write_canonical(&mut out, e.payload);
    let _ = write!(
        out,
        ",\"recorded_at_us\":{},\"schema_version\":{},\"stream_id\":",
        e.recorded_at.timestamp_micros(),
        e.schema_version
    );
    write_string(&mut out, e.stream_id);
    out.extend_from_slice(b",\"stream_type\":");
    write_string(&mut out, e.stream_type);
    let _ = write!(out, ",\"version\":{}}}", e.version);
    out
}

/// `sha256(prev ‖ canonical)`.
pub fn chain(prev: &[u8], canonical: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical);
    h.finalize().to_vec()
}

/// Writes `value` as compact JSON with object keys sorted, independent of how the map stores them.
pub fn write_canonical(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, k);
                out.push(b':');
                write_canonical(out, &map[k]);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, v);
            }
            out.push(b']');
        }
        scalar => {
            // Scalars have exactly one compact form.
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event<'a>(payload: &'a Value, metadata: &'a Value) -> CanonicalEvent<'a> {
        CanonicalEvent {
            stream_type: "Conversation",
            stream_id: "c1",
            version: 3,
            event_type: "MessagePosted",
            schema_version: 1,
            event_id: Uuid::nil(),
            account_id: Uuid::nil(),
            payload,
            metadata,
            recorded_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap_or_default(),
        }
    }

    #[test]
    fn key_order_does_not_change_the_canonical_bytes() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"d":2,"c":3}],"x":null}}"#).unwrap_or_default();
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":null,"y":[1,{"c":3,"d":2}]},"b":1}"#).unwrap_or_default();
        let m = json!({});
        assert_eq!(canonical_bytes(&event(&a, &m)), canonical_bytes(&event(&b, &m)));
    }

    #[test]
    fn canonical_bytes_are_compact_sorted_json() {
        let p = json!({"body": "hé \"x\"", "n": 2});
        let m = json!({"actor_type": "system"});
        let bytes = canonical_bytes(&event(&p, &m));
        let text = String::from_utf8(bytes.clone()).unwrap_or_default();
        assert!(text.starts_with("{\"account_id\":\"00000000-"), "{text}");
        let parsed: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!(parsed["recorded_at_us"], json!(1_700_000_000_123_456_i64));
        assert_eq!(parsed["payload"]["body"], json!("hé \"x\""));
        assert_eq!(parsed["version"], json!(3));
    }

    #[test]
    fn any_change_of_content_changes_the_hash() {
        let m = json!({});
        let p1 = json!({"body": "a"});
        let p2 = json!({"body": "b"});
        let h1 = chain(&GENESIS, &canonical_bytes(&event(&p1, &m)));
        let h2 = chain(&GENESIS, &canonical_bytes(&event(&p2, &m)));
        assert_ne!(h1, h2);
        assert_ne!(chain(&h1, b"x"), chain(&h2, b"x"));
        assert_eq!(h1.len(), 32);
    }
}
