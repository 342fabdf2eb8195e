//! Secret fields (password and token hashes) are stored in the log but never shown: the audit
//! API, the WebSocket feed and the replay CLI show `"[redacted]"` in their place.

use serde_json::Value;

pub const REDACTED: &str = "[redacted]";

/// Field names whose values are secret, wherever they appear in a payload.
pub const SECRET_FIELDS: &[&str] = &["password_hash", "refresh_token_hash", "token_hash", "secret_hash"];

/// Replaces every secret field, at any depth, with `"[redacted]"`.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if SECRET_FIELDS.contains(&k.as_str()) {
                    *v = Value::String(REDACTED.into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let mut v = json!({"password_hash": "x", "a": [{"token_hash": "y", "ok": 1}], "name": "n"});
        redact(&mut v);
        assert_eq!(
            v,
            json!({"password_hash": "[redacted]", "a": [{"token_hash": "[redacted]", "ok": 1}], "name": "n"})
        );
    }
}
