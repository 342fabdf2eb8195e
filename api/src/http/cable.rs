//! `GET /api/v1/cable`: the WebSocket feed (API.md, "WebSocket").
//!
//! Every subscription keeps the cursor of the last event it delivered. Events come live from the
//! node's feed; one at or before a subscription's cursor is skipped, so the seam between catch-up
//! (read from the store after the client's `after`) and live delivery has no gap and no
//! duplicate. When the connection falls behind the feed it catches up from the store.

use std::collections::BTreeMap;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use parley_aggregates::conversation::{Conversation, ConversationEvent};
use parley_aggregates::permissions::Permission;
use parley_aggregates::secrets::redact;
use parley_eventstore::{EventFilter, LogCursor, RecordedEvent};
use parley_projections::read_models::messages::query::MessageView;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::auth::{origin, Credential, Principal};
use super::error::{ApiError, Code};
use super::extract::ApiQuery;
use super::state::AppState;
use crate::live::fanout::{Interest, LagSignal, Listener, Routed};
use crate::live::{api_keys, revocations};

/// Close code for a missing, bad or revoked token.
pub const UNAUTHORIZED_CLOSE: u16 = 4401;
/// Events read from the store per catch-up page.
const CATCH_UP_PAGE: i64 = 500;
/// How often a connection looks whether its credential ended.
const CREDENTIAL_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Deserialize)]
pub struct CableParams {
    token: Option<String>,
}

/// The request's origin, for the principal's metadata.
pub struct Origin(Option<String>, Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let (request_id, client_ip) = origin(parts);
        Ok(Self(request_id, client_ip))
    }
}

pub async fn cable(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<CableParams>,
    Origin(request_id, client_ip): Origin,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return ApiError::new(Code::BadRequest, "this endpoint speaks WebSocket: send an upgrade request")
            .into_response();
    };
    let principal = match params.token.as_deref() {
        Some(token) => Principal::authenticate(&state, token, request_id, client_ip).await.ok(),
        None => None,
    };
    ws.max_message_size(64 * 1024).on_upgrade(move |socket| async move {
        match principal {
            Some(principal) => Connection::new(state, principal).run(socket).await,
            None => close_unauthorized(socket).await,
        }
    })
}

async fn close_unauthorized(mut socket: WebSocket) {
    close_unauthorized_ref(&mut socket).await;
}

async fn close_unauthorized_ref(socket: &mut WebSocket) {
    let frame = CloseFrame { code: UNAUTHORIZED_CLOSE, reason: "unauthorized".into() };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// What a client may say.
#[derive(Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
enum ClientCommand {
    Subscribe { channel: String, id: Option<String>, after: Option<String> },
    Unsubscribe { channel: String, id: Option<String> },
    Ping,
}

/// One subscription: which events, and the last one delivered.
struct Subscription {
    channel: &'static str,
    id: Option<String>,
    /// What the connection listens to for it.
    interest: Interest,
    filter: EventFilter,
    /// The `user` channel: only the account's events that concern this user.
    user: Option<Uuid>,
    cursor: LogCursor,
}

impl Subscription {
    fn matches(&self, e: &RecordedEvent) -> bool {
        Some(e.account_id) == self.filter.account_id
            && self.filter.stream_type.as_deref().is_none_or(|t| t == e.stream_type)
            && self.filter.stream_id.as_deref().is_none_or(|i| i == e.stream_id)
            && self.user.is_none_or(|user| concerns(e, user))
    }

    /// Why `e` ends this subscription for `me`, if it does: a conversation's member removed
    /// (`removed`: they get nothing after it, not even the event) or archived.
    fn ended_by(&self, e: &RecordedEvent, me: Option<Uuid>) -> Option<&'static str> {
        if self.channel != "conversation" {
            return None;
        }
        match e.event_type.as_str() {
            "MemberRemoved" => {
                let removed = e.payload.get("user_id").and_then(|v| v.as_str()).and_then(|s| s.parse().ok());
                (removed.is_some() && removed == me).then_some("removed")
            }
            "ConversationArchived" => Some("archived"),
            _ => None,
        }
    }

    fn unsubscribed(&self, reason: &str) -> String {
        json!({"type": "unsubscribed", "channel": self.channel, "id": self.id, "reason": reason}).to_string()
    }

    /// The frame of `e` on this subscription; `body` is the part every subscriber gets alike,
    /// rendered once per event (see [`frame_body`]).
    fn frame(&self, e: &RecordedEvent, body: &str) -> String {
        let head = json!({"type": "event", "channel": self.channel, "id": self.id, "position": e.cursor().to_string()})
            .to_string();
        // `{...}` + `,<body>}`
        let mut frame = String::with_capacity(head.len() + body.len() + 2);
        frame.push_str(&head[..head.len() - 1]);
        frame.push(',');
        frame.push_str(body);
        frame.push('}');
        frame
    }
}

/// The part of an event's frame that is the same for every subscriber: `"event":{...}` (secrets
/// redacted) and, for a posted message, `"message":{...}`, the message as every answer shows it.
pub fn frame_body(e: &RecordedEvent) -> String {
    let mut data = e.payload.clone();
    redact(&mut data);
    let event = json!({
        "event_id": e.event_id,
        "event_type": e.event_type,
        "stream_type": e.stream_type,
        "stream_id": e.stream_id,
        "version": e.version,
        "data": data,
        "recorded_at": e.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "actor_id": e.actor_id(),
    });
    let mut body = format!("\"event\":{event}");
    if let Some(message) = posted_message(e) {
        body.push_str(",\"message\":");
        body.push_str(&json!(message).to_string());
    }
    body
}

/// The message a `MessagePosted` event posts, as the read model will show it.
fn posted_message(e: &RecordedEvent) -> Option<MessageView> {
    if e.event_type != "MessagePosted" {
        return None;
    }
    match parley_aggregates::from_payload(&e.event_type, &e.payload).ok()? {
        ConversationEvent::MessagePosted { message_id, conversation_id, author_id, body, mentions } => {
            Some(MessageView::posted(
                message_id,
                conversation_id,
                author_id,
                body,
                mentions,
                e.recorded_at,
                e.version,
            ))
        }
        _ => None,
    }
}

struct Connection {
    state: AppState,
    principal: Principal,
    subscriptions: BTreeMap<(String, Option<String>), Subscription>,
    /// The events of its subscriptions' streams and accounts, routed from the node's feed.
    listener: Listener,
}

/// The connection ends: the client left or the socket failed.
struct Closed;

impl Connection {
    fn new(state: AppState, principal: Principal) -> Self {
        let listener = state.live.fanout.listen();
        Self { state, principal, subscriptions: BTreeMap::new(), listener }
    }

    async fn run(mut self, mut socket: WebSocket) {
        metrics::gauge!("parley_ws_connections").increment(1.0);
        let _ = self.serve(&mut socket).await;
        metrics::gauge!("parley_ws_connections").decrement(1.0);
    }

    async fn serve(&mut self, socket: &mut WebSocket) -> Result<(), Closed> {
        let lag = self.listener.lag_signal();
        send(socket, json!({"type": "welcome"}).to_string()).await?;
        let mut stop = self.state.live.stopped();
        let stopping = stop.stopped();
        tokio::pin!(stopping);
        // The denylist learns of ended credentials at their commit, before the feed may bring
        // the event (an old transaction elsewhere can hold the feed back): look at it often.
        let mut check = tokio::time::interval(CREDENTIAL_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = check.tick() => if self.credential_ended() {
                    close_unauthorized_ref(socket).await;
                    return Err(Closed);
                },
                _ = &mut stopping => {
                    let frame = CloseFrame { code: 1001, reason: "server shutting down".into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return Err(Closed);
                }
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Text(text))) => self.command(socket, text.as_str()).await?,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Err(Closed),
                    Some(Ok(_)) => {}
                },
                event = self.listener.recv() => match event {
                    // Events were dropped before this one: deliver nothing newer before them.
                    Some(_) if lag.is_lagged() => self.catch_up_lagged(socket, &lag).await?,
                    // Its own end is not news for it: the connection closes instead.
                    Some(routed) if self.ends_my_credential(&routed.event) => {
                        close_unauthorized_ref(socket).await;
                        return Err(Closed);
                    }
                    Some(event) => self.deliver(socket, &event).await?,
                    None => return Err(Closed),
                },
                _ = lag.lagged() => self.catch_up_lagged(socket, &lag).await?,
            }
        }
    }

    /// Whether `event` ends the credential this connection authenticated with: its session
    /// (logout, revocation, deactivation) or its API key.
    fn ends_my_credential(&self, event: &RecordedEvent) -> bool {
        let (event_type, field, id) = match &self.principal.credential {
            Credential::Session(claims) => (revocations::SESSION_ENDED, "session_id", claims.sid),
            Credential::ApiKey(id) => (api_keys::API_KEY_REVOKED, "api_key_id", *id),
        };
        event.event_type == event_type
            && event.payload.get(field).and_then(|v| v.as_str()) == Some(&id.to_string())
    }

    /// Whether the credential ended: each node learns it at its commit (logout, revocation,
    /// deactivation, a revoked API key).
    fn credential_ended(&self) -> bool {
        match &self.principal.credential {
            Credential::Session(claims) => self.state.live.revocations.is_revoked(claims.sid),
            Credential::ApiKey(id) => self.state.live.api_keys.is_revoked(*id),
        }
    }

    async fn deliver(&mut self, socket: &mut WebSocket, routed: &Routed) -> Result<(), Closed> {
        let event = &routed.event;
        let me = self.principal.user_id().ok();
        let mut ended = Vec::new();
        for (key, sub) in self.subscriptions.iter_mut() {
            if event.cursor() > sub.cursor && sub.matches(event) {
                if let Some(reason) = sub.ended_by(event, me) {
                    send(socket, sub.unsubscribed(reason)).await?;
                    ended.push(key.clone());
                    continue;
                }
                send(socket, sub.frame(event, routed.rendered(frame_body))).await?;
                sub.cursor = event.cursor();
            }
        }
        for key in ended {
            if let Some(sub) = self.subscriptions.remove(&key) {
                self.listener.stop_listening(&sub.interest);
            }
        }
        Ok(())
    }

    /// Catches up from the store after the router dropped events for this connection.
    async fn catch_up_lagged(&mut self, socket: &mut WebSocket, lag: &LagSignal) -> Result<(), Closed> {
        lag.caught_up();
        tracing::debug!("websocket fell behind the live feed; catching up from the store");
        metrics::counter!("parley_ws_catch_ups_total").increment(1);
        self.catch_up_all(socket).await
    }

    async fn catch_up_all(&mut self, socket: &mut WebSocket) -> Result<(), Closed> {
        let keys: Vec<_> = self.subscriptions.keys().cloned().collect();
        for key in keys {
            self.catch_up(socket, &key).await?;
        }
        Ok(())
    }

    /// Sends every matching event after the subscription's cursor, from the store.
    async fn catch_up(
        &mut self,
        socket: &mut WebSocket,
        key: &(String, Option<String>),
    ) -> Result<(), Closed> {
        loop {
            let Some(sub) = self.subscriptions.get_mut(key) else { return Ok(()) };
            let mut filter = sub.filter.clone();
            filter.after = sub.cursor;
            let page = match self.state.app.store.query(&filter, CATCH_UP_PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "websocket catch-up failed");
                    return Err(Closed);
                }
            };
            let me = self.principal.user_id().ok();
            for event in &page {
                if let Some(reason) = sub.ended_by(event, me) {
                    send(socket, sub.unsubscribed(reason)).await?;
                    if let Some(sub) = self.subscriptions.remove(key) {
                        self.listener.stop_listening(&sub.interest);
                    }
                    return Ok(());
                }
                if sub.matches(event) {
                    send(socket, sub.frame(event, &frame_body(event))).await?;
                }
                sub.cursor = event.cursor();
            }
            if (page.len() as i64) < CATCH_UP_PAGE {
                return Ok(());
            }
        }
    }

    async fn command(&mut self, socket: &mut WebSocket, text: &str) -> Result<(), Closed> {
        let command: ClientCommand = match serde_json::from_str(text) {
            Ok(c) => c,
            Err(e) => {
                let reply = json!({"type": "error", "code": "bad_request", "error": e.to_string()});
                return send(socket, reply.to_string()).await;
            }
        };
        match command {
            ClientCommand::Ping => send(socket, json!({"type": "pong"}).to_string()).await,
            ClientCommand::Unsubscribe { channel, id } => {
                if let Some(sub) = self.subscriptions.remove(&(channel.clone(), id.clone())) {
                    self.listener.stop_listening(&sub.interest);
                }
                send(socket, json!({"type": "unsubscribed", "channel": channel, "id": id}).to_string()).await
            }
            ClientCommand::Subscribe { channel, id, after } => {
                self.subscribe(socket, channel, id, after).await
            }
        }
    }

    async fn subscribe(
        &mut self,
        socket: &mut WebSocket,
        channel: String,
        id: Option<String>,
        after: Option<String>,
    ) -> Result<(), Closed> {
        let rejected =
            |code: &str| json!({"type": "rejected", "channel": channel, "id": id, "code": code}).to_string();
        let after = match after.as_deref().map(str::parse::<LogCursor>) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(_)) => return send(socket, rejected("bad_request")).await,
        };
        let account_id = self.principal.account_id();
        let mut user = None;
        let (name, filter) = match channel.as_str() {
            "user" => {
                let Ok(me) = self.principal.user_id() else {
                    return send(socket, rejected("forbidden")).await;
                };
                user = Some(me);
                ("user", EventFilter { account_id: Some(account_id), ..Default::default() })
            }
            "account" => {
                if !self.principal.ctx.actor.can(Permission::AuditView) {
                    return send(socket, rejected("forbidden")).await;
                }
                ("account", EventFilter { account_id: Some(account_id), ..Default::default() })
            }
            "conversation" => {
                let Some(conversation) = id.as_deref().and_then(|i| i.parse::<Uuid>().ok()) else {
                    return send(socket, rejected("not_found")).await;
                };
                match self.is_member(conversation).await {
                    Ok(true) => {}
                    Ok(false) => return send(socket, rejected("not_found")).await,
                    Err(()) => return Err(Closed),
                }
                let filter = EventFilter {
                    account_id: Some(account_id),
                    stream_type: Some("Conversation".into()),
                    stream_id: Some(conversation.to_string()),
                    ..Default::default()
                };
                ("conversation", filter)
            }
            _ => return send(socket, rejected("not_found")).await,
        };
        let interest = match &filter.stream_id {
            Some(stream_id) => Interest::Stream {
                account_id,
                stream_type: filter.stream_type.clone().unwrap_or_default(),
                stream_id: stream_id.clone(),
            },
            None => Interest::Account(account_id),
        };
        // Listen first, then read where to start: no event falls between the two.
        self.listener.listen_to(interest.clone());
        let head = match self.state.app.store.head().await {
            Ok(head) => head,
            Err(_) => return Err(Closed),
        };
        let key = (channel.clone(), id.clone());
        let cursor = after.unwrap_or(head);
        let sub = Subscription { channel: name, id: id.clone(), interest, filter, user, cursor };
        if let Some(replaced) = self.subscriptions.insert(key.clone(), sub) {
            self.listener.stop_listening(&replaced.interest);
        }
        send(
            socket,
            json!({"type": "subscribed", "channel": channel, "id": id, "position": head.to_string()})
                .to_string(),
        )
        .await?;
        if after.is_some() {
            self.catch_up(socket, &key).await?;
        }
        Ok(())
    }

    /// Membership, from the write side: strictly consistent, so a member who just joined or
    /// created the conversation is never refused. Another account's conversation is not found.
    async fn is_member(&self, conversation: Uuid) -> Result<bool, ()> {
        let loaded = self
            .state
            .app
            .commands
            .dispatcher()
            .load::<Conversation>(&conversation.to_string())
            .await
            .map_err(|e| tracing::warn!(error = %e, "membership check failed"))?;
        // An API key is no member of any conversation.
        let Ok(user_id) = self.principal.user_id() else { return Ok(false) };
        Ok(loaded.is_some_and(|l| {
            l.account_id == self.principal.account_id()
                && !l.aggregate.archived
                && l.aggregate.is_member(user_id)
        }))
    }
}

/// Whether `e` is news for `user`'s own channel: a mention, being added to a conversation by
/// someone else, their notifications marked read (on another device).
fn concerns(e: &RecordedEvent, user: Uuid) -> bool {
    let is_user = |field: &str| e.payload.get(field).and_then(|v| v.as_str()) == Some(&user.to_string());
    match e.event_type.as_str() {
        "MessagePosted" => e
            .payload
            .get("mentions")
            .and_then(|m| m.as_array())
            .is_some_and(|m| m.iter().any(|v| v.as_str() == Some(&user.to_string()))),
        "MemberAdded" => is_user("user_id") && !is_user("added_by"),
        "NotificationRead" | "NotificationsReadAll" => is_user("user_id"),
        _ => false,
    }
}

async fn send(socket: &mut WebSocket, text: String) -> Result<(), Closed> {
    socket.send(Message::Text(text.into())).await.map_err(|_| Closed)
}
