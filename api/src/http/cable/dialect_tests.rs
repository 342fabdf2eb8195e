//! The dialects' frames, without a socket.

use super::*;

#[test]
fn an_identifier_is_kept_byte_for_byte() {
    let identifier = r#"{"conversation_id":"x","channel":"ConversationChannel"}"#;
    let text = json!({"command": "subscribe", "identifier": identifier}).to_string();
    let decoded = Dialect::ActionCable.decode(&text).unwrap();
    let Request::Subscribe { label, channel, .. } = decoded.request else { panic!("a subscribe") };
    assert_eq!(label, Label::Cable(identifier.to_owned()));
    assert_eq!(channel, Ok(Channel::Conversation("x".into())));
    let confirmed: Value = serde_json::from_str(&Dialect::ActionCable.subscribed(&label, "0")).unwrap();
    assert_eq!(confirmed["identifier"], identifier);
    let frame = Dialect::on_subscription(identifier, r#"{"type":"x"}"#);
    let parsed: Value = serde_json::from_str(&frame).unwrap();
    assert_eq!(
        (parsed["identifier"].as_str(), parsed["message"]["type"].as_str()),
        (Some(identifier), Some("x"))
    );
}

#[test]
fn bad_frames_name_what_is_wrong() {
    let bad = |text: &str| Dialect::ActionCable.decode(text).unwrap_err();
    assert_eq!(bad("not json").on, None);
    let e = bad(r#"{"command":"subscribe","identifier":"not json"}"#);
    assert_eq!((e.code, e.on), ("bad_request", Some(Label::Cable("not json".into()))));
    let call = r#"{"channel":"CallChannel"}"#;
    let frame = |data: &str| json!({"command": "message", "identifier": call, "data": data}).to_string();
    assert!(bad(&frame("{oops")).message.contains("not JSON"));
    assert!(bad(&frame(r#"{"action":"fly"}"#)).message.contains("no action"));
    assert!(bad(&frame(r#"{"action":"accept_call"}"#)).message.contains("call_session_id"));
    let ok =
        Dialect::ActionCable.decode(&frame(r#"{"action":"accept_call","call_session_id":"c"}"#)).unwrap();
    assert!(matches!(ok.request, Request::Call { answer: CallAnswer::Accept, .. }));
    assert_eq!(ok.on, Some(Label::Cable(call.into())));
    let unknown = Dialect::ActionCable
        .decode(&json!({"command": "subscribe", "identifier": r#"{"channel":"NopeChannel"}"#}).to_string())
        .unwrap();
    assert!(matches!(unknown.request, Request::Subscribe { channel: Err("not_found"), .. }));
}
