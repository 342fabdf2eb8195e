//! A connection subscribes: which events a channel follows, whether the client may follow it,
//! where it starts (live, or the client's position), and what it hears first.

use axum::extract::ws::Message;
use cqrs_es::Aggregate;
use futures::Sink;
use parley_aggregates::call::Call;
use parley_aggregates::conversation::Conversation;
use parley_aggregates::creator::Stream;
use parley_aggregates::permissions::Permission;
use parley_eventstore::{EventFilter, LogCursor};
use serde_json::json;
use uuid::Uuid;

use super::super::dialect::{Channel, Dialect, Label};
use super::super::subscription::Subscription;
use super::{send, Closed, Connection};
use crate::live::fanout::Interest;

impl Connection {
    pub(super) async fn subscribe<S: Sink<Message> + Unpin>(
        &mut self,
        socket: &mut S,
        label: Label,
        channel: Result<Channel, &'static str>,
        after: Option<String>,
    ) -> Result<(), Closed> {
        let dialect = self.dialect;
        // Action Cable's client subscribes again until it hears a confirmation: one identifier
        // is one subscription, confirmed again.
        if matches!(label, Label::Cable(_)) && self.subscriptions.contains_key(&label) {
            return send(socket, dialect.subscribed(&label, "")).await;
        }
        let channel = match channel {
            Ok(channel) => channel,
            Err(code) => return send(socket, dialect.rejected(&label, code)).await,
        };
        let after = match after.as_deref().map(str::parse::<LogCursor>) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(_)) => return send(socket, dialect.rejected(&label, "bad_request")).await,
        };
        let account_id = self.principal.account_id();
        let account = EventFilter { account_id: Some(account_id), ..Default::default() };
        let me = self.principal.user_id().ok();
        // A stream subscription: which stream, and whether the subscriber counts as a viewer.
        let mut watching = None;
        // Which events, for which user, and what the connection listens to for them.
        let (channel, filter, user, interest) = match channel {
            Channel::User | Channel::Notifications | Channel::Presence | Channel::Calls if me.is_none() => {
                return send(socket, dialect.rejected(&label, "forbidden")).await;
            }
            Channel::User | Channel::Notifications => {
                (channel, account, me, Some(Interest::Account(account_id)))
            }
            Channel::Calls => {
                let filter = EventFilter { stream_type: Some(Call::TYPE.into()), ..account };
                (channel, filter, me, Some(Interest::Account(account_id)))
            }
            Channel::Presence => (channel, account, me, None),
            Channel::Account => {
                if !self.principal.ctx.actor.can(Permission::AuditView) {
                    return send(socket, dialect.rejected(&label, "forbidden")).await;
                }
                (channel, account, None, Some(Interest::Account(account_id)))
            }
            Channel::Stream(id) => {
                let Ok(stream) = id.parse::<Uuid>() else {
                    return send(socket, dialect.rejected(&label, "not_found")).await;
                };
                let (viewer, chat) = match self.may_watch(stream).await {
                    Ok(Some(watch)) => watch,
                    Ok(None) => return send(socket, dialect.rejected(&label, "not_found")).await,
                    Err(()) => return Err(Closed),
                };
                // It carries the stream's chat once live (Action Cable's `StreamChannel` shows
                // it as `new_message` and the rest), and the stream's own events before that.
                let (stream_type, stream_id) = match chat {
                    Some(chat) => (Conversation::TYPE, chat.to_string()),
                    None => (Stream::TYPE, stream.to_string()),
                };
                let filter = EventFilter {
                    stream_type: Some(stream_type.into()),
                    stream_id: Some(stream_id.clone()),
                    ..account
                };
                let interest = Interest::Stream { account_id, stream_type: stream_type.into(), stream_id };
                watching = Some((stream, viewer));
                (Channel::Stream(stream.to_string()), filter, None, Some(interest))
            }
            Channel::Conversation(id) => {
                let Ok(conversation) = id.parse::<Uuid>() else {
                    return send(socket, dialect.rejected(&label, "not_found")).await;
                };
                match self.is_member(conversation).await {
                    Ok(true) => {}
                    Ok(false) => {
                        match self.app.creator.chat_reader(&self.principal.ctx, conversation).await {
                            // A live stream's chat: whoever may see the stream follows it.
                            Ok(true) => {}
                            Ok(false) => return send(socket, dialect.rejected(&label, "not_found")).await,
                            Err(_) => return Err(Closed),
                        }
                    }
                    Err(()) => return Err(Closed),
                }
                let filter = EventFilter {
                    stream_type: Some(Conversation::TYPE.into()),
                    stream_id: Some(conversation.to_string()),
                    ..account
                };
                let interest = Interest::Stream {
                    account_id,
                    stream_type: Conversation::TYPE.into(),
                    stream_id: conversation.to_string(),
                };
                (Channel::Conversation(conversation.to_string()), filter, None, Some(interest))
            }
        };
        // Listen first, then read where to start: no event falls between the two.
        if let Some(interest) = &interest {
            self.listener.listen_to(interest.clone());
        }
        let head = match self.app.store.head().await {
            Ok(head) => head,
            Err(_) => return Err(Closed),
        };
        let cursor = after.unwrap_or(head);
        let roster = matches!(channel, Channel::User | Channel::Presence);
        let sub = Subscription { label: label.clone(), channel, interest, filter, user, cursor };
        if let Some(replaced) = self.subscriptions.insert(label.clone(), sub) {
            if let Some(interest) = &replaced.interest {
                self.listener.stop_listening(interest);
            }
        }
        send(socket, dialect.subscribed(&label, &head.to_string())).await?;
        if let Some((stream, viewer)) = watching {
            // Counted from now on, and told the count at once (then at each change).
            let user = me.unwrap_or(Uuid::nil());
            let count =
                self.live.viewers.watch(&self.viewer_tap, self.presence_id, stream, user, viewer).await;
            send(socket, viewer_update(&label, stream, count)).await?;
        }
        if let (true, Some(me)) = (roster, me) {
            // Who of those sharing a conversation with the subscriber is online now.
            let online = self.live.presence.roster(me).await;
            let frame = match &label {
                Label::Parley { .. } => {
                    json!({"type": "presence_roster", "online_user_ids": online}).to_string()
                }
                Label::Cable(identifier) => Dialect::on_subscription(
                    identifier,
                    &json!({"type": "initial_presence", "online_user_ids": online}).to_string(),
                ),
            };
            send(socket, frame).await?;
        }
        if after.is_some() {
            self.catch_up(socket, &label).await?;
        }
        Ok(())
    }

    /// Whether the caller may watch the stream: `Some((false, chat))` for a host (`spaces.manage`:
    /// told the count, not counted), `Some((true, chat))` for a user with a live grant to its
    /// experience, `None` otherwise (not found, as for another account's); `chat` is the
    /// stream's chat once it went live.
    async fn may_watch(&self, stream: Uuid) -> Result<Option<(bool, Option<Uuid>)>, ()> {
        let loaded = self
            .app
            .commands
            .dispatcher()
            .load::<Stream>(&stream.to_string())
            .await
            .map_err(|e| tracing::warn!(error = %e, "stream check failed"))?;
        let Some(loaded) = loaded.filter(|l| l.account_id == self.principal.account_id()) else {
            return Ok(None);
        };
        let chat = loaded.aggregate.conversation_id;
        if self.principal.ctx.actor.can(Permission::SpacesManage) {
            return Ok(Some((false, chat)));
        }
        let Some(experience) = loaded.aggregate.experience_id else { return Ok(None) };
        // From the write side's facts: a grant just given lets its user in at once.
        let allowed = self
            .app
            .creator
            .may_see(&self.principal.ctx, experience)
            .await
            .map_err(|e| tracing::warn!(error = %e, "access check failed"))?;
        Ok(allowed.then_some((true, chat)))
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

/// `viewer_update` for a stream subscription, in its dialect.
pub(super) fn viewer_update(label: &Label, stream: Uuid, count: i64) -> String {
    match label {
        Label::Parley { .. } => {
            json!({"type": "viewer_update", "stream_id": stream, "count": count}).to_string()
        }
        Label::Cable(identifier) => Dialect::on_subscription(
            identifier,
            &json!({"type": "viewer_update", "count": count}).to_string(),
        ),
    }
}
