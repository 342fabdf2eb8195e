//! The protocol loop of one connection, in Parley's dialect, written over a generic
//! `Sink`/`Stream` of frames.

use std::collections::BTreeMap;

use axum::extract::ws::{CloseFrame, Message};
use cqrs_es::Aggregate;
use futures::{Sink, SinkExt, Stream, StreamExt};
use parley_aggregates::conversation::Conversation;
use parley_aggregates::permissions::Permission;
use parley_eventstore::{EventFilter, LogCursor, RecordedEvent};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

#[path = "relay.rs"]
mod relay;

pub use super::subscription::frame_body;
use super::subscription::Subscription;
use crate::app::App;
use crate::http::auth::{Credential, Principal};
use crate::live::fanout::{Interest, LagSignal, Listener, Routed};
use crate::live::signals::SignalTap;
use crate::live::{api_keys, revocations, Live};

/// Close code for a missing, bad or revoked token.
pub const UNAUTHORIZED_CLOSE: u16 = 4401;
/// Events read from the store per catch-up page.
const CATCH_UP_PAGE: i64 = 500;

/// What a client may say.
#[derive(Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
enum ClientCommand {
    Subscribe {
        channel: String,
        id: Option<String>,
        after: Option<String>,
    },
    Unsubscribe {
        channel: String,
        id: Option<String>,
    },
    Ping,
    /// A heartbeat (any frame counts as one).
    Presence,
    Typing {
        conversation_id: String,
    },
    Signal {
        call_id: String,
        to_user_id: String,
        signal: serde_json::Value,
    },
    CallMedia {
        call_id: String,
        muted: Option<bool>,
        camera_off: Option<bool>,
    },
}

/// The largest frame a client may send (a signal's session description fits well within it).
const MAX_FRAME: usize = 64 * 1024;
fn error_frame(code: &str, message: &str) -> String {
    json!({"type": "error", "code": code, "message": message}).to_string()
}

/// One client's connection, over any `Sink`/`Stream` of frames (a WebSocket in production).
pub struct Connection {
    app: App,
    live: Live,
    principal: Principal,
    subscriptions: BTreeMap<(String, Option<String>), Subscription>,
    /// The events of its subscriptions' streams and accounts, routed from the node's feed.
    listener: Listener,
    /// The signals for its user, from every node (users only).
    signals: Option<SignalTap>,
    bucket: relay::Bucket,
    /// When it last relayed typing, by conversation.
    typed: std::collections::HashMap<Uuid, std::time::Instant>,
    /// Its row in the cluster's presence (users only).
    presence_id: Uuid,
    /// When the client was last heard from (any frame, a pong to the server's ping included).
    heard: std::time::Instant,
}

/// The connection ends: the client left or the socket failed.
struct Closed;

impl Connection {
    pub fn new(app: App, live: Live, principal: Principal) -> Self {
        let listener = live.fanout.listen();
        let signals = principal.user_id().ok().map(|user| live.signals.tap(user));
        let (bucket, typed) = (relay::Bucket::new(), Default::default());
        let (presence_id, heard) = (Uuid::now_v7(), std::time::Instant::now());
        Self {
            app,
            live,
            principal,
            subscriptions: BTreeMap::new(),
            listener,
            signals,
            bucket,
            typed,
            presence_id,
            heard,
        }
    }

    /// Speaks the protocol over `socket` until the client leaves, its credential ends or the
    /// node stops.
    pub async fn run<S, E>(mut self, mut socket: S)
    where
        S: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin,
    {
        metrics::gauge!("parley_ws_connections").increment(1.0);
        let user = self.principal.user_id().ok();
        if let Some(user) = user {
            Box::pin(self.live.presence.connected(self.presence_id, user, self.principal.account_id())).await;
        }
        let _ = self.serve(&mut socket).await;
        if user.is_some() {
            self.live.presence.disconnected(self.presence_id);
        }
        metrics::gauge!("parley_ws_connections").decrement(1.0);
    }

    async fn serve<S, E>(&mut self, socket: &mut S) -> Result<(), Closed>
    where
        S: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin,
    {
        let lag = self.listener.lag_signal();
        send(socket, json!({"type": "welcome"}).to_string()).await?;
        let mut stop = self.live.closing();
        let stopping = stop.stopped();
        tokio::pin!(stopping);
        // The denylist learns of ended credentials at their commit, before the feed may bring
        // the event (an old transaction elsewhere can hold the feed back): look at it at each
        // change, and once now for an end between the handshake and this subscription.
        let mut ended = match &self.principal.credential {
            Credential::Session(_) => self.live.revocations.ended_changes(),
            Credential::ApiKey(_) => self.live.api_keys.revocations(),
        };
        if self.credential_ended() {
            let _ = socket.send(unauthorized_close()).await;
            return Err(Closed);
        }
        // While the connection lives, its node keeps its user online; the server's own pings
        // are answered by any live client, so a quiet one lives, and one unheard for a whole
        // TTL is closed.
        let ping_every = self.live.presence.ping_every();
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = ping.tick() => {
                    if self.heard.elapsed() > ping_every * 3 {
                        // Unheard for a whole TTL: the client is gone without closing.
                        return Err(Closed);
                    }
                    if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                        return Err(Closed);
                    }
                }
                _ = ended.next() => if self.credential_ended() {
                    let _ = socket.send(unauthorized_close()).await;
                    return Err(Closed);
                },
                _ = &mut stopping => {
                    let frame = CloseFrame { code: 1001, reason: "server shutting down".into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return Err(Closed);
                }
                incoming = socket.next() => {
                    self.heard = std::time::Instant::now();
                    match incoming {
                        Some(Ok(Message::Text(text))) => Box::pin(self.command(socket, text.as_str())).await?,
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Err(Closed),
                        Some(Ok(_)) => {}
                    }
                },
                event = self.listener.recv() => match event {
                    // Events were dropped before this one: deliver nothing newer before them.
                    Some(_) if lag.is_lagged() => Box::pin(self.catch_up_lagged(socket, &lag)).await?,
                    // Its own end is not news for it: the connection closes instead.
                    Some(routed) if self.ends_my_credential(&routed.event) => {
                        let _ = socket.send(unauthorized_close()).await;
                        return Err(Closed);
                    }
                    Some(event) => Box::pin(self.deliver(socket, &event)).await?,
                    None => return Err(Closed),
                },
                _ = lag.lagged() => Box::pin(self.catch_up_lagged(socket, &lag)).await?,
                signal = async { match self.signals.as_mut() { Some(tap) => tap.rx.recv().await, None => std::future::pending().await } } => {
                    if let Some((frame, user_channel)) = signal {
                        if !user_channel || self.subscriptions.contains_key(&("user".to_owned(), None)) {
                            send(socket, frame.to_string()).await?;
                        }
                    }
                }
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
            Credential::Session(claims) => self.live.revocations.is_revoked(claims.sid),
            Credential::ApiKey(id) => self.live.api_keys.is_revoked(*id),
        }
    }

    async fn deliver<S: Sink<Message> + Unpin>(
        &mut self,
        socket: &mut S,
        routed: &Routed,
    ) -> Result<(), Closed> {
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
    async fn catch_up_lagged<S: Sink<Message> + Unpin>(
        &mut self,
        socket: &mut S,
        lag: &LagSignal,
    ) -> Result<(), Closed> {
        lag.caught_up();
        tracing::debug!("websocket fell behind the live feed; catching up from the store");
        metrics::counter!("parley_ws_catch_ups_total").increment(1);
        self.catch_up_all(socket).await
    }

    async fn catch_up_all<S: Sink<Message> + Unpin>(&mut self, socket: &mut S) -> Result<(), Closed> {
        let keys: Vec<_> = self.subscriptions.keys().cloned().collect();
        for key in keys {
            self.catch_up(socket, &key).await?;
        }
        Ok(())
    }

    /// Sends every matching event after the subscription's cursor, from the store.
    async fn catch_up<S: Sink<Message> + Unpin>(
        &mut self,
        socket: &mut S,
        key: &(String, Option<String>),
    ) -> Result<(), Closed> {
        loop {
            let Some(sub) = self.subscriptions.get_mut(key) else { return Ok(()) };
            let mut filter = sub.filter.clone();
            filter.after = sub.cursor;
            let page = match self.app.store.query(&filter, CATCH_UP_PAGE).await {
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

    async fn command<S: Sink<Message> + Unpin>(&mut self, socket: &mut S, text: &str) -> Result<(), Closed> {
        if text.len() > MAX_FRAME {
            return send(socket, error_frame("payload_too_large", "a frame may be at most 64 KiB")).await;
        }
        let command: ClientCommand = match serde_json::from_str(text) {
            Ok(c) => c,
            Err(e) => {
                let reply = json!({"type": "error", "code": "bad_request", "message": e.to_string()});
                return send(socket, reply.to_string()).await;
            }
        };
        match command {
            ClientCommand::Ping => send(socket, json!({"type": "pong"}).to_string()).await,
            ClientCommand::Presence => Ok(()),
            ClientCommand::Typing { conversation_id } => {
                let refused = self.typing(&conversation_id).await;
                self.answer_refusal(socket, refused).await
            }
            ClientCommand::Signal { call_id, to_user_id, signal } => {
                let refused = self.signal(&call_id, &to_user_id, signal).await;
                self.answer_refusal(socket, refused).await
            }
            ClientCommand::CallMedia { call_id, muted, camera_off } => {
                let refused = self.call_media(&call_id, muted, camera_off).await;
                self.answer_refusal(socket, refused).await
            }
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

    async fn subscribe<S: Sink<Message> + Unpin>(
        &mut self,
        socket: &mut S,
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
                    stream_type: Some(Conversation::TYPE.into()),
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
        let head = match self.app.store.head().await {
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
        if let Some(me) = user {
            // Who of those sharing a conversation with the subscriber is online now.
            let online = self.live.presence.roster(me).await;
            send(socket, json!({"type": "presence_roster", "online_user_ids": online}).to_string()).await?;
        }
        if after.is_some() {
            self.catch_up(socket, &key).await?;
        }
        Ok(())
    }

    /// Membership, from the write side: strictly consistent, so a member who just joined or
    /// created the conversation is never refused. Another account's conversation is not found.
    async fn is_member(&self, conversation: Uuid) -> Result<bool, ()> {
        let loaded = self
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

async fn send<S: Sink<Message> + Unpin>(socket: &mut S, text: String) -> Result<(), Closed> {
    socket.send(Message::Text(text.into())).await.map_err(|_| Closed)
}

/// The close frame of a missing, bad or ended credential.
pub(super) fn unauthorized_close() -> Message {
    Message::Close(Some(CloseFrame { code: UNAUTHORIZED_CLOSE, reason: "unauthorized".into() }))
}
