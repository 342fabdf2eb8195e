//! The cable's protocol loop without a socket: a `Connection` speaking over in-memory channels,
//! on a real store and the node's real followers. Subscribing, resuming from a position, falling
//! behind the feed and an ended session, each driven frame by frame.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::Message;
use futures::channel::mpsc;
use futures::{Sink, Stream, StreamExt};
use parley_api::http::auth::{JwtKeys, Principal};
use parley_api::http::cable::{Connection, UNAUTHORIZED_CLOSE};
use parley_api::live::Live;
use parley_commands::CommandContext;
use parley_eventstore::LogCursor;
use parley_tests::TestApp;
use serde_json::{json, Value};
use uuid::Uuid;

/// The server's side of an in-memory connection: frames from the client in, frames to it out
/// (through a bounded channel, so a client that does not read holds the server back as a slow
/// socket would).
struct Pipe {
    incoming: mpsc::UnboundedReceiver<Result<Message, Infallible>>,
    outgoing: mpsc::Sender<Message>,
}

impl Stream for Pipe {
    type Item = Result<Message, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_next_unpin(cx)
    }
}

impl Sink<Message> for Pipe {
    type Error = mpsc::SendError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.outgoing.poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        self.outgoing.start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.outgoing).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.outgoing).poll_close(cx)
    }
}

/// The client's side.
struct Client {
    to_server: mpsc::UnboundedSender<Result<Message, Infallible>>,
    from_server: mpsc::Receiver<Message>,
}

impl Client {
    fn say(&self, frame: Value) {
        self.to_server.unbounded_send(Ok(Message::Text(frame.to_string().into()))).unwrap();
    }

    /// The next frame: JSON text, or the close code.
    async fn next(&mut self) -> Result<Value, Option<u16>> {
        let msg = tokio::time::timeout(Duration::from_secs(10), self.from_server.next())
            .await
            .expect("a frame within 10 s");
        match msg {
            Some(Message::Text(t)) => Ok(serde_json::from_str(t.as_str()).unwrap()),
            Some(Message::Close(frame)) => Err(frame.map(|f| f.code)),
            Some(other) => panic!("unexpected frame {other:?}"),
            None => Err(None),
        }
    }

    async fn frame(&mut self) -> Value {
        self.next().await.expect("a frame")
    }

    /// The message ids of the next `n` event frames.
    async fn posted(&mut self, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        while ids.len() < n {
            let f = self.frame().await;
            assert_eq!(f["type"], "event", "{f}");
            ids.extend(f["event"]["data"]["message_id"].as_str().map(str::to_owned));
        }
        ids
    }
}

/// A registered owner's session, a conversation of theirs, and a connection of theirs.
struct Scene {
    t: TestApp,
    live: Live,
    ctx: CommandContext,
    session: Uuid,
    conversation: Uuid,
}

impl Scene {
    async fn new(capacity: usize) -> Self {
        let t = TestApp::new().await;
        let (ctx, _) = t.owner("owner@example.com").await;
        let session = t.app.commands.start_session(&ctx).await.unwrap().session_id;
        let conversation = t.app.commands.start_group(&ctx, "Loop", &[]).await.unwrap().aggregate.id.unwrap();
        let live = Live::start(&t.app, capacity, std::time::Duration::from_secs(35)).await.unwrap();
        Self { t, live, ctx, session, conversation }
    }

    /// A connection of the owner's session, running.
    fn connect(&self, outgoing_capacity: usize) -> Client {
        let keys = JwtKeys::new(b"loop");
        let actor = self.ctx.actor.id.unwrap();
        let (token, _) = keys
            .issue(actor, self.ctx.account_id, self.session, &["owner".into()], 1, LogCursor::default())
            .unwrap();
        let claims = keys.verify(&token).unwrap();
        let principal = Principal::from_claims(claims, &self.live.roles, None, None);
        let (to_server, incoming) = mpsc::unbounded();
        let (outgoing, from_server) = mpsc::channel(outgoing_capacity);
        let connection = Connection::new(self.t.app.clone(), self.live.clone(), principal);
        tokio::spawn(connection.run(Pipe { incoming, outgoing }));
        Client { to_server, from_server }
    }

    async fn post(&self, body: &str) -> (String, LogCursor) {
        let done = self.t.app.commands.post_message(&self.ctx, self.conversation, body).await.unwrap();
        let id = match done.events.last() {
            Some(parley_aggregates::conversation::ConversationEvent::MessagePosted {
                message_id, ..
            }) => message_id.to_string(),
            other => panic!("a post: {other:?}"),
        };
        (id, done.cursor.unwrap())
    }

    async fn finish(self) {
        self.live.stop().await;
        self.t.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_resumed_from_a_position_gets_everything_after_it_then_live_events_once() {
    let scene = Scene::new(64).await;
    let (_, first) = scene.post("one").await;
    let (two, _) = scene.post("two").await;
    let (three, _) = scene.post("three").await;
    scene.t.settle().await;
    let mut client = scene.connect(16);
    assert_eq!(client.frame().await["type"], "welcome");
    client.say(json!({"command": "subscribe", "channel": "conversation", "id": scene.conversation, "after": first.to_string()}));
    assert_eq!(client.frame().await["type"], "subscribed");
    assert_eq!(client.posted(2).await, [two, three], "what came after the position, from the store");
    let (four, _) = scene.post("four").await;
    assert_eq!(client.posted(1).await, [four], "then live, without a duplicate at the seam");
    client.say(json!({"command": "ping"}));
    assert_eq!(client.frame().await["type"], "pong", "and nothing else came in between");
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_falls_behind_catches_up_from_the_store_without_a_gap() {
    // One event of room for the connection, and a client that reads nothing for a while.
    let scene = Scene::new(1).await;
    let mut client = scene.connect(1);
    assert_eq!(client.frame().await["type"], "welcome");
    client.say(json!({"command": "subscribe", "channel": "conversation", "id": scene.conversation}));
    assert_eq!(client.frame().await["type"], "subscribed");
    let mut sent = Vec::new();
    for i in 0..40 {
        sent.push(scene.post(&format!("m{i}")).await.0);
    }
    assert_eq!(client.posted(40).await, sent, "every message once, in order, after catching up");
    assert!(scene.live.fanout.lags() > 0, "the connection did fall behind, and caught up");
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_session_closes_its_connection_with_4401() {
    let scene = Scene::new(64).await;
    let mut client = scene.connect(16);
    assert_eq!(client.frame().await["type"], "welcome");
    client.say(json!({"command": "subscribe", "channel": "user"}));
    assert_eq!(client.frame().await["type"], "subscribed");
    assert_eq!(client.frame().await["type"], "presence_roster");
    // Logout: its event reaches this node's revocations at its commit.
    scene.t.app.commands.end_session(&scene.ctx, scene.session, "logout").await.unwrap();
    assert_eq!(client.next().await, Err(Some(UNAUTHORIZED_CLOSE)));
    scene.finish().await;
}
