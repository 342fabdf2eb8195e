//! Schema evolution (DESIGN.md, invariant 6): stored events are never rewritten; readers upcast
//! old `schema_version`s of a payload step by step to the newest one.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

/// Turns the payload of `event_type` at `from_version` into the payload at `from_version + 1`.
#[derive(Clone, Copy)]
pub struct Upcaster {
    pub event_type: &'static str,
    pub from_version: i32,
    pub upcast: Step,
}

/// One step of an event type's payload, from a schema version to the next.
pub type Step = fn(Value) -> Value;

/// The registered upcasters, looked up by event type and version.
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: Arc<HashMap<(&'static str, i32), Step>>,
}

impl Upcasters {
    pub fn new(upcasters: impl IntoIterator<Item = Upcaster>) -> Self {
        let steps = upcasters.into_iter().map(|u| ((u.event_type, u.from_version), u.upcast)).collect();
        Self { steps: Arc::new(steps) }
    }

    /// Applies every step from `version` on; returns the newest payload and its version.
    pub fn upcast(&self, event_type: &str, mut version: i32, mut payload: Value) -> (i32, Value) {
        if self.steps.is_empty() {
            return (version, payload);
        }
        while let Some(step) = self.steps.get(&(event_type, version)) {
            payload = step(payload);
            version += 1;
        }
        (version, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rename_text_to_body(mut v: Value) -> Value {
        if let Some(obj) = v.as_object_mut() {
            if let Some(text) = obj.remove("text") {
                obj.insert("body".into(), text);
            }
        }
        v
    }

    fn add_format(mut v: Value) -> Value {
        if let Some(obj) = v.as_object_mut() {
            obj.insert("format".into(), json!("plain"));
        }
        v
    }

    #[test]
    fn old_payloads_are_upcast_step_by_step() {
        let u = Upcasters::new([
            Upcaster { event_type: "MessagePosted", from_version: 1, upcast: rename_text_to_body },
            Upcaster { event_type: "MessagePosted", from_version: 2, upcast: add_format },
        ]);
        assert_eq!(
            u.upcast("MessagePosted", 1, json!({"text": "hi"})),
            (3, json!({"body": "hi", "format": "plain"}))
        );
        assert_eq!(u.upcast("MessagePosted", 3, json!({"body": "x"})), (3, json!({"body": "x"})));
        assert_eq!(u.upcast("Other", 1, json!({"text": "x"})), (1, json!({"text": "x"})));
    }
}
