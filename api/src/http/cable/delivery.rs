//! Events to a connection's subscriptions: live from the node's feed, or from the store after
//! a subscription's cursor (a resume, or a connection that fell behind the feed); each rendered
//! in its subscription's dialect.

use axum::extract::ws::Message;
use futures::Sink;
use parley_eventstore::RecordedEvent;
use uuid::Uuid;

use super::super::action_cable;
use super::super::dialect::{Channel, Dialect, Label};
use super::super::subscription::{event_frame, frame_body, Subscription};
use super::{send, Closed, Connection};
use crate::app::App;
use crate::live::fanout::{LagSignal, Routed};

/// Events read from the store per catch-up page.
const CATCH_UP_PAGE: i64 = 500;

impl Connection {
    pub(super) async fn deliver<S: Sink<Message> + Unpin>(
        &mut self,
        socket: &mut S,
        routed: &Routed,
    ) -> Result<(), Closed> {
        let event = &routed.event;
        let me = self.principal.user_id().ok();
        let (app, dialect) = (self.app.clone(), self.dialect);
        let mut ended = Vec::new();
        for (label, sub) in self.subscriptions.iter_mut() {
            if event.cursor() > sub.cursor && sub.matches(event) {
                if let Some(reason) = sub.ended_by(event, me) {
                    send(socket, dialect.ended(label, reason)).await?;
                    ended.push(label.clone());
                    continue;
                }
                if let Some(frame) = render(&app, sub, event, Some(routed), me).await {
                    send(socket, frame).await?;
                }
                sub.cursor = event.cursor();
            }
        }
        for label in ended {
            self.drop_subscription(&label);
        }
        Ok(())
    }

    pub(super) fn drop_subscription(&mut self, label: &Label) {
        if let Some(sub) = self.subscriptions.remove(label) {
            if let Some(interest) = &sub.interest {
                self.listener.stop_listening(interest);
            }
            if let Channel::Stream(stream) = &sub.channel {
                if let Ok(stream) = stream.parse() {
                    self.live.viewers.unwatch(self.presence_id, stream);
                }
            }
        }
    }

    /// Catches up from the store after the router dropped events for this connection.
    pub(super) async fn catch_up_lagged<S: Sink<Message> + Unpin>(
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
        let labels: Vec<_> = self.subscriptions.keys().cloned().collect();
        for label in labels {
            self.catch_up(socket, &label).await?;
        }
        Ok(())
    }

    /// Sends every matching event after the subscription's cursor, from the store.
    pub(super) async fn catch_up<S: Sink<Message> + Unpin>(
        &mut self,
        socket: &mut S,
        label: &Label,
    ) -> Result<(), Closed> {
        let (app, dialect) = (self.app.clone(), self.dialect);
        let me = self.principal.user_id().ok();
        loop {
            let Some(sub) = self.subscriptions.get_mut(label) else { return Ok(()) };
            if sub.interest.is_none() {
                return Ok(());
            }
            let mut filter = sub.filter.clone();
            filter.after = sub.cursor;
            let page = match app.store.query(&filter, CATCH_UP_PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "websocket catch-up failed");
                    return Err(Closed);
                }
            };
            for event in &page {
                if let Some(reason) = sub.ended_by(event, me) {
                    send(socket, dialect.ended(label, reason)).await?;
                    self.drop_subscription(label);
                    return Ok(());
                }
                if sub.matches(event) {
                    if let Some(frame) = render(&app, sub, event, None, me).await {
                        send(socket, frame).await?;
                    }
                }
                sub.cursor = event.cursor();
            }
            if (page.len() as i64) < CATCH_UP_PAGE {
                return Ok(());
            }
        }
    }
}

/// The frame an event makes on `sub`, if it shows it: Parley's event frame (its body rendered
/// once per event on the node when `routed`), or the Action Cable channel's message.
async fn render(
    app: &App,
    sub: &Subscription,
    event: &RecordedEvent,
    routed: Option<&Routed>,
    me: Option<Uuid>,
) -> Option<String> {
    match &sub.label {
        Label::Parley { channel, id } => Some(match routed {
            Some(routed) => event_frame(channel, id.as_deref(), event, routed.rendered(frame_body)),
            None => event_frame(channel, id.as_deref(), event, &frame_body(event)),
        }),
        Label::Cable(identifier) => {
            let message = match (&sub.channel, routed) {
                (Channel::Notifications, _) => action_cable::notification_message(app, event, me?).await?,
                (Channel::Conversation(_) | Channel::Calls | Channel::Stream(_), Some(routed)) => {
                    routed.rendered_once(|| action_cable::shared_message(app, event)).await?.to_owned()
                }
                (Channel::Conversation(_) | Channel::Calls | Channel::Stream(_), None) => {
                    action_cable::shared_message(app, event).await?
                }
                _ => return None,
            };
            Some(Dialect::on_subscription(identifier, &message))
        }
    }
}
