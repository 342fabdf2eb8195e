//! The write side's own rows derived again from events that are already in the log: uniqueness
//! claims, the index rows commands decide on, refresh-token hashes and the webhook fan-out's
//! routes. An imported log needs them so that commands decide on it as they did on the original;
//! they are written by the very `write_side` code that wrote them beside the original events, in
//! log order (claims are freed and taken again in that order: a renamed role's old name, a
//! conversation's ended call).

use cqrs_es::Aggregate;
use parley_aggregates::api_key::ApiKey;
use parley_aggregates::call::Call;
use parley_aggregates::conversation::{Conversation, ConversationEvent};
use parley_aggregates::creator::{AccessGrant, Space, Stream};
use parley_aggregates::from_payload;
use parley_aggregates::invitation::Invitation;
use parley_aggregates::role::Role;
use parley_aggregates::session::Session;
use parley_aggregates::user::User;
use parley_aggregates::webhook::WebhookSubscription;
use parley_eventstore::{RecordedEvent, StreamKey};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::DispatchError;
use crate::webhooks::fanout::follow_route;
use crate::write_side::WriteSide;

/// Derives the write side's rows of a log fed to it in order, a batch at a time.
///
/// A command's events are consecutive in the log and some rows need all of them (a direct
/// conversation's pair claim needs the members added with it), so the last run of one stream in
/// a batch is held back and derived with the next batch (or at [`Rederive::finish`]).
#[derive(Default)]
pub struct Rederive {
    held: Vec<RecordedEvent>,
}

impl Rederive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Derives the rows of `events`, the next events of the log in order, their payloads upcast.
    pub async fn feed(
        &mut self,
        conn: &mut PgConnection,
        events: Vec<RecordedEvent>,
    ) -> Result<(), DispatchError> {
        let mut all = std::mem::take(&mut self.held);
        all.extend(events);
        let tail = all.len() - trailing_run(&all);
        // A batch of one stream alone is derived whole: its runs already start at the stream's
        // first event or hold more than a command's events.
        if tail > 0 {
            self.held = all.split_off(tail);
        }
        derive(conn, &all).await
    }

    /// Derives what was held back.
    pub async fn finish(mut self, conn: &mut PgConnection) -> Result<(), DispatchError> {
        let held = std::mem::take(&mut self.held);
        derive(conn, &held).await
    }
}

/// How many events at the end of `events` belong to its last event's stream.
fn trailing_run(events: &[RecordedEvent]) -> usize {
    let Some(last) = events.last() else { return 0 };
    events.iter().rev().take_while(|e| same_stream(e, last)).count()
}

fn same_stream(a: &RecordedEvent, b: &RecordedEvent) -> bool {
    a.stream_id == b.stream_id && a.stream_type == b.stream_type
}

/// Posted messages waiting to be indexed in one statement.
type Posts = Vec<(Uuid, StreamKey, Vec<ConversationEvent>)>;

async fn derive(conn: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), DispatchError> {
    let mut posts: Posts = Vec::new();
    for run in events.chunk_by(same_stream) {
        let Some(first) = run.first() else { continue };
        let stream = StreamKey::new(first.stream_type.clone(), first.stream_id.clone());
        let account = first.account_id;
        match first.stream_type.as_str() {
            Conversation::TYPE => {
                conversation(conn, &mut posts, account, stream, decode::<Conversation>(run)?).await?
            }
            User::TYPE => User::write_side(conn, account, &stream, &decode::<User>(run)?).await?,
            Session::TYPE => Session::write_side(conn, account, &stream, &decode::<Session>(run)?).await?,
            Invitation::TYPE => {
                Invitation::write_side(conn, account, &stream, &decode::<Invitation>(run)?).await?
            }
            Role::TYPE => Role::write_side(conn, account, &stream, &decode::<Role>(run)?).await?,
            ApiKey::TYPE => ApiKey::write_side(conn, account, &stream, &decode::<ApiKey>(run)?).await?,
            Call::TYPE => Call::write_side(conn, account, &stream, &decode::<Call>(run)?).await?,
            Space::TYPE => Space::write_side(conn, account, &stream, &decode::<Space>(run)?).await?,
            Stream::TYPE => Stream::write_side(conn, account, &stream, &decode::<Stream>(run)?).await?,
            AccessGrant::TYPE => {
                AccessGrant::write_side(conn, account, &stream, &decode::<AccessGrant>(run)?).await?
            }
            WebhookSubscription::TYPE => {
                for event in run {
                    follow_route(conn, event).await?;
                }
            }
            // The other aggregates keep no rows beside their events.
            _ => {}
        }
    }
    flush(conn, &mut posts).await
}

/// A conversation's run: posts are gathered (one statement for many, as a group commit writes
/// them); any other event first writes the posts before it, so an edit finds its message's row.
async fn conversation(
    conn: &mut PgConnection,
    posts: &mut Posts,
    account: Uuid,
    stream: StreamKey,
    events: Vec<ConversationEvent>,
) -> Result<(), DispatchError> {
    let is_post = |e: &ConversationEvent| matches!(e, ConversationEvent::MessagePosted { .. });
    for segment in events.chunk_by(|a, b| is_post(a) == is_post(b)) {
        if segment.first().is_some_and(is_post) {
            posts.push((account, stream.clone(), segment.to_vec()));
        } else {
            flush(conn, posts).await?;
            Conversation::write_side(conn, account, &stream, segment).await?;
        }
    }
    Ok(())
}

async fn flush(conn: &mut PgConnection, posts: &mut Posts) -> Result<(), DispatchError> {
    if posts.is_empty() {
        return Ok(());
    }
    let written: Vec<(Uuid, &StreamKey, &[ConversationEvent])> =
        posts.iter().map(|(a, s, e)| (*a, s, e.as_slice())).collect();
    Conversation::write_side_all(conn, &written).await?;
    posts.clear();
    Ok(())
}

fn decode<A: WriteSide>(run: &[RecordedEvent]) -> Result<Vec<A::Event>, DispatchError> {
    run.iter().map(|e| Ok(from_payload(&e.event_type, &e.payload)?)).collect()
}
