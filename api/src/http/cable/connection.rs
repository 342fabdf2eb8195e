//! The protocol loop of one connection, written once for both dialects ([`Dialect`]) over a
//! generic `Sink`/`Stream` of frames: subscriptions, catch-up, live delivery, lag, revocation,
//! presence and the relay are decided here; the dialect only reads and writes the frames.

use std::collections::BTreeMap;

use axum::extract::ws::{CloseFrame, Message};
use futures::{Sink, SinkExt, Stream, StreamExt};
use parley_aggregates::call::Call;
use parley_eventstore::RecordedEvent;
use uuid::Uuid;

#[path = "delivery.rs"]
mod delivery;
#[path = "relay.rs"]
mod relay;
#[path = "subscribing.rs"]
mod subscribing;

use super::action_cable;
use super::dialect::{CallAnswer, Channel, Decoded, Dialect, Label, Request};
pub use super::subscription::frame_body;
use super::subscription::Subscription;
use crate::app::App;
use crate::http::auth::{Credential, Principal};
use crate::http::error::ApiError;
use crate::live::fanout::Listener;
use crate::live::signals::SignalTap;
use crate::live::viewers::{ViewerNote, ViewerTap, Viewers};
use crate::live::{api_keys, revocations, Live};

/// Close code for a missing, bad or revoked token.
pub const UNAUTHORIZED_CLOSE: u16 = 4401;
/// The largest frame a client may send (a signal's session description fits well within it).
const MAX_FRAME: usize = 64 * 1024;

/// One client's connection, over any `Sink`/`Stream` of frames (a WebSocket in production).
pub struct Connection {
    app: App,
    live: Live,
    principal: Principal,
    dialect: Dialect,
    subscriptions: BTreeMap<Label, Subscription>,
    /// The events of its subscriptions' streams and accounts, routed from the node's feed.
    listener: Listener,
    /// The signals for its user, from every node (users only).
    signals: Option<SignalTap>,
    bucket: relay::Bucket,
    /// When it last relayed typing, by conversation.
    typed: std::collections::HashMap<Uuid, std::time::Instant>,
    /// Its row in the cluster's presence (users only), and its id among a stream's viewers.
    presence_id: Uuid,
    /// Viewer counts of the streams it watches, and the end of a viewer's access.
    viewer_tap: ViewerTap,
    /// When the client was last heard from (any frame, a pong to the server's ping included).
    heard: std::time::Instant,
}

/// The connection ends: the client left or the socket failed.
pub(super) struct Closed;

impl Connection {
    /// A connection in Parley's own dialect.
    pub fn new(app: App, live: Live, principal: Principal) -> Self {
        Self::speaking(app, live, principal, Dialect::Parley)
    }

    pub fn speaking(app: App, live: Live, principal: Principal, dialect: Dialect) -> Self {
        let listener = live.fanout.listen();
        let signals = principal.user_id().ok().map(|user| live.signals.tap(user));
        let (bucket, typed) = (relay::Bucket::new(), Default::default());
        let (presence_id, heard) = (Uuid::now_v7(), std::time::Instant::now());
        Self {
            app,
            live,
            principal,
            dialect,
            subscriptions: BTreeMap::new(),
            listener,
            signals,
            bucket,
            typed,
            presence_id,
            viewer_tap: Viewers::tap(),
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
        for sub in self.subscriptions.values() {
            if let Channel::Stream(stream) = &sub.channel {
                if let Ok(stream) = stream.parse() {
                    self.live.viewers.unwatch(self.presence_id, stream);
                }
            }
        }
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
        send(socket, self.dialect.welcome()).await?;
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
            return refuse_credential(socket, self.dialect).await;
        }
        // While the connection lives, its node keeps its user online; the server's own pings
        // are answered by any live client, so a quiet one lives, and one unheard for a whole
        // TTL is closed.
        let ping_every = self.live.presence.ping_every();
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // The dialect's own keepalive frames (Action Cable's `ping` every 3 s).
        let mut keepalive = self.dialect.keepalive().map(|every| {
            let mut timer = tokio::time::interval(every);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            timer
        });
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
                _ = async { match keepalive.as_mut() { Some(k) => k.tick().await, None => std::future::pending().await } } => {
                    send(socket, self.dialect.ping()).await?;
                }
                _ = ended.next() => if self.credential_ended() {
                    return refuse_credential(socket, self.dialect).await;
                },
                _ = &mut stopping => {
                    if let Some(text) = self.dialect.restarting() {
                        let _ = send(socket, text).await;
                    }
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
                        return refuse_credential(socket, self.dialect).await;
                    }
                    Some(event) => Box::pin(self.deliver(socket, &event)).await?,
                    None => return Err(Closed),
                },
                _ = lag.lagged() => Box::pin(self.catch_up_lagged(socket, &lag)).await?,
                note = self.viewer_tap.rx.recv() => if let Some(note) = note {
                    self.viewer_note(socket, note).await?;
                },
                signal = async { match self.signals.as_mut() { Some(tap) => tap.rx.recv().await, None => std::future::pending().await } } => {
                    if let Some((frame, user_channel)) = signal {
                        self.relayed(socket, &frame, user_channel).await?;
                    }
                }
            }
        }
    }

    /// A signal from another user (or the cluster's presence) reaches the client: in Parley's
    /// dialect as it came (presence only on the `user` channel), in Action Cable's on the channel
    /// that shows it.
    async fn relayed<S: Sink<Message> + Unpin>(
        &mut self,
        socket: &mut S,
        frame: &str,
        user_channel: bool,
    ) -> Result<(), Closed> {
        match self.dialect {
            Dialect::Parley => {
                let user = Label::Parley { channel: "user".into(), id: None };
                if !user_channel || self.subscriptions.contains_key(&user) {
                    send(socket, frame.to_owned()).await?;
                }
            }
            Dialect::ActionCable => {
                let Ok(frame) = serde_json::from_str::<serde_json::Value>(frame) else { return Ok(()) };
                for (channel, message) in action_cable::signal_messages(&frame) {
                    let message = message.to_string();
                    for sub in self.subscriptions.values().filter(|s| s.channel == channel) {
                        if let Label::Cable(identifier) = &sub.label {
                            send(socket, Dialect::on_subscription(identifier, &message)).await?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A stream's count changed, or the viewer's access to it ended (the subscription ends with
    /// `access_ended`).
    async fn viewer_note<S: Sink<Message> + Unpin>(
        &mut self,
        socket: &mut S,
        note: ViewerNote,
    ) -> Result<(), Closed> {
        let stream_id = match &note {
            ViewerNote::Count { stream_id, .. } | ViewerNote::AccessEnded { stream_id } => *stream_id,
        };
        let labels: Vec<Label> = self
            .subscriptions
            .values()
            .filter(|s| s.channel == Channel::Stream(stream_id.to_string()))
            .map(|s| s.label.clone())
            .collect();
        for label in labels {
            match note {
                ViewerNote::Count { count, .. } => {
                    send(socket, subscribing::viewer_update(&label, stream_id, count)).await?
                }
                ViewerNote::AccessEnded { .. } => {
                    self.drop_subscription(&label);
                    send(socket, self.dialect.ended(&label, "access_ended")).await?;
                }
            }
        }
        Ok(())
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

    async fn command<S: Sink<Message> + Unpin>(&mut self, socket: &mut S, text: &str) -> Result<(), Closed> {
        let dialect = self.dialect;
        if text.len() > MAX_FRAME {
            return send(socket, dialect.error(None, "payload_too_large", "a frame may be at most 64 KiB"))
                .await;
        }
        let Decoded { request, on } = match dialect.decode(text) {
            Ok(decoded) => decoded,
            Err(e) => return send(socket, dialect.error(e.on.as_ref(), e.code, &e.message)).await,
        };
        // An action names the subscription it is sent on: there must be one.
        if let Some(label) = &on {
            if !self.subscriptions.contains_key(label) {
                let refusal = dialect.error(Some(label), "not_found", "no subscription with this identifier");
                return send(socket, refusal).await;
            }
        }
        let refused = match request {
            Request::Ping => {
                return if let Some(pong) = dialect.pong() { send(socket, pong).await } else { Ok(()) }
            }
            Request::Heartbeat => None,
            Request::Typing { conversation_id } => owned(self.typing(&conversation_id).await),
            Request::Signal { call_id, to_user_id, signal } => {
                owned(self.signal(&call_id, &to_user_id, signal).await)
            }
            Request::CallMedia { call_id, muted, camera_off } => {
                owned(self.call_media(&call_id, muted, camera_off).await)
            }
            Request::Call { call_id, answer } => self.answer_call(&call_id, answer).await.err(),
            Request::Unsubscribe { label } => {
                self.drop_subscription(&label);
                return match dialect.unsubscribed(&label) {
                    Some(text) => send(socket, text).await,
                    None => Ok(()),
                };
            }
            Request::Subscribe { label, channel, after } => {
                return self.subscribe(socket, label, channel, after).await;
            }
        };
        match refused {
            Some((code, message)) => send(socket, dialect.error(on.as_ref(), code, &message)).await,
            None => Ok(()),
        }
    }

    /// Accepts, declines or hangs up the call `call_id` (Action Cable's `CallChannel` actions; the
    /// same use cases as the HTTP routes).
    async fn answer_call(&self, call_id: &str, answer: CallAnswer) -> Result<(), (&'static str, String)> {
        let not_found = || ("not_found", "no such call".to_owned());
        let call_id: Uuid = call_id.parse().map_err(|_| not_found())?;
        let loaded = self.app.commands.dispatcher().load::<Call>(&call_id.to_string()).await;
        let conversation_id = match loaded {
            Ok(Some(c)) if c.account_id == self.principal.account_id() => {
                c.aggregate.conversation_id.ok_or_else(not_found)?
            }
            Ok(_) => return Err(not_found()),
            Err(_) => return Err(("service_unavailable", "the call could not be read; try again".into())),
        };
        let (calls, ctx) = (&self.app.calls, &self.principal.ctx);
        let done = match answer {
            CallAnswer::Accept => calls.accept(ctx, conversation_id, call_id).await.map(|_| ()),
            CallAnswer::Decline => calls.decline(ctx, conversation_id, call_id).await.map(|_| ()),
            CallAnswer::HangUp => calls.hang_up(ctx, conversation_id, call_id).await.map(|_| ()),
        };
        done.map_err(|e| {
            let e = ApiError::from(e);
            (e.code.describe().0, e.message)
        })
    }
}

fn owned(refused: relay::Refusal) -> Option<(&'static str, String)> {
    refused.map(|(code, message)| (code, message.to_owned()))
}

/// Ends the connection of a bad or ended credential: Action Cable's client is told not to come
/// back first.
pub(super) async fn refuse_credential<S: Sink<Message> + Unpin>(
    socket: &mut S,
    dialect: Dialect,
) -> Result<(), Closed> {
    if let Some(text) = dialect.unauthorized() {
        let _ = send(socket, text).await;
    }
    let _ = socket.send(unauthorized_close()).await;
    Err(Closed)
}

async fn send<S: Sink<Message> + Unpin>(socket: &mut S, text: String) -> Result<(), Closed> {
    socket.send(Message::Text(text.into())).await.map_err(|_| Closed)
}

/// The close frame of a missing, bad or ended credential.
fn unauthorized_close() -> Message {
    Message::Close(Some(CloseFrame { code: UNAUTHORIZED_CLOSE, reason: "unauthorized".into() }))
}
