//! The conversation's write side: every posted message's index row, the direct pair's claim,
//! reactions' rows.

use parley_aggregates::conversation::{
    Conversation, ConversationCommand, ConversationError, ConversationEvent, DIRECT,
};
use parley_eventstore::claims::{self, ClaimOutcome};
use parley_eventstore::StreamKey;
use sqlx::PgConnection;
use uuid::Uuid;

use super::WriteSide;
use crate::error::DispatchError;

/// The claim that keeps one direct conversation per pair of users.
pub const DIRECT_PAIR_CLAIM: &str = "direct_pair";

/// The claim value of the direct conversation of two users of an account (in either order).
pub fn direct_pair_key(account_id: Uuid, a: Uuid, b: Uuid) -> String {
    let (low, high) = if a < b { (a, b) } else { (b, a) };
    format!("{account_id}/{low}/{high}")
}

impl WriteSide for Conversation {
    /// A conversation may hold 100,000 messages: load from a snapshot plus at most this many events.
    const SNAPSHOT_EVERY: i64 = 100;
    /// 2: members' read markers and the topic joined the state.
    const STATE_VERSION: i32 = 2;

    fn creates_stream(command: &ConversationCommand) -> bool {
        matches!(
            command,
            ConversationCommand::StartGroup { .. }
                | ConversationCommand::StartDirect { .. }
                | ConversationCommand::StartStreamChat { .. }
        )
    }

    fn writes_rows(events: &[ConversationEvent]) -> bool {
        events.iter().any(|event| Fact::of(event, events).is_some())
    }

    fn unique_rows(events: &[ConversationEvent]) -> Vec<String> {
        events
            .iter()
            .filter_map(|event| match Fact::of(event, events)? {
                Fact::Reacted { message_id, user_id, emoji, .. } => {
                    Some(format!("reaction/{message_id}/{user_id}/{emoji}"))
                }
                Fact::Unreacted { reaction_id } => Some(format!("unreaction/{reaction_id}")),
                Fact::Edited { message_id, .. } | Fact::Deleted { message_id, .. } => {
                    Some(format!("message/{message_id}"))
                }
                _ => None,
            })
            .collect()
    }

    async fn write_side(
        conn: &mut PgConnection,
        account_id: Uuid,
        stream: &StreamKey,
        events: &[ConversationEvent],
    ) -> Result<(), DispatchError> {
        Self::write_side_all(conn, &[(account_id, stream, events)]).await
    }

    /// Every posted message's index row in one statement; the rarer facts one by one.
    async fn write_side_all(
        conn: &mut PgConnection,
        written: &[(Uuid, &StreamKey, &[ConversationEvent])],
    ) -> Result<(), DispatchError> {
        let (mut conversations, mut messages, mut accounts, mut authors) = (vec![], vec![], vec![], vec![]);
        for (account_id, stream, events) in written {
            for fact in events.iter().filter_map(|event| Fact::of(event, events)) {
                match fact {
                    Fact::Posted { conversation_id, message_id, author_id } => {
                        conversations.push(conversation_id);
                        messages.push(message_id);
                        accounts.push(*account_id);
                        authors.push(author_id);
                    }
                    other => other.write(conn, *account_id, stream).await?,
                }
            }
        }
        insert_posts(conn, &conversations, &messages, &accounts, &authors).await
    }
}

/// Posted messages' index rows, in one statement.
async fn insert_posts(
    conn: &mut PgConnection,
    conversations: &[Uuid],
    messages: &[Uuid],
    accounts: &[Uuid],
    authors: &[Uuid],
) -> Result<(), DispatchError> {
    if messages.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO message_facts (conversation_id, message_id, account_id, author_id) \
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[])",
    )
    .bind(conversations)
    .bind(messages)
    .bind(accounts)
    .bind(authors)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The write-side row one conversation event needs, if any: the one place that says which
/// events write rows (so that [`WriteSide::writes_rows`] and the writing cannot disagree).
enum Fact<'a> {
    /// A posted message's index row.
    Posted {
        conversation_id: Uuid,
        message_id: Uuid,
        author_id: Uuid,
    },
    /// A new direct conversation claims its pair of users.
    DirectPair {
        a: Uuid,
        b: Uuid,
    },
    /// An archived conversation frees its pair (if it held one) for a new one.
    PairFreed,
    Edited {
        message_id: Uuid,
        version: i32,
    },
    Deleted {
        message_id: Uuid,
        version: i32,
    },
    Reacted {
        reaction_id: Uuid,
        message_id: Uuid,
        conversation_id: Uuid,
        user_id: Uuid,
        emoji: &'a str,
    },
    Unreacted {
        reaction_id: Uuid,
    },
}

impl<'a> Fact<'a> {
    /// The row `event` needs (`events`: the command's events, for the members of a direct
    /// conversation it starts).
    fn of(event: &'a ConversationEvent, events: &[ConversationEvent]) -> Option<Self> {
        Some(match event {
            ConversationEvent::MessagePosted { message_id, conversation_id, author_id, .. } => Fact::Posted {
                conversation_id: *conversation_id,
                message_id: *message_id,
                author_id: *author_id,
            },
            ConversationEvent::ConversationStarted { kind, .. } if kind == DIRECT => {
                let members: Vec<Uuid> = events
                    .iter()
                    .filter_map(|e| match e {
                        ConversationEvent::MemberAdded { user_id, .. } => Some(*user_id),
                        _ => None,
                    })
                    .collect();
                let [a, b] = members[..] else { return None };
                Fact::DirectPair { a, b }
            }
            ConversationEvent::ConversationArchived { .. } => Fact::PairFreed,
            ConversationEvent::MessageEdited { message_id, version, .. } => {
                Fact::Edited { message_id: *message_id, version: *version }
            }
            ConversationEvent::MessageDeleted { message_id, version, .. } => {
                Fact::Deleted { message_id: *message_id, version: *version }
            }
            ConversationEvent::ReactionAdded { reaction_id, message_id, conversation_id, user_id, emoji } => {
                Fact::Reacted {
                    reaction_id: *reaction_id,
                    message_id: *message_id,
                    conversation_id: *conversation_id,
                    user_id: *user_id,
                    emoji,
                }
            }
            ConversationEvent::ReactionRemoved { reaction_id, .. } => {
                Fact::Unreacted { reaction_id: *reaction_id }
            }
            _ => return None,
        })
    }

    /// Writes the fact's row (a command's posts are written together, by `write_side_all`).
    async fn write(
        self,
        conn: &mut PgConnection,
        account_id: Uuid,
        stream: &StreamKey,
    ) -> Result<(), DispatchError> {
        match self {
            Fact::Posted { conversation_id, message_id, author_id } => {
                insert_posts(conn, &[conversation_id], &[message_id], &[account_id], &[author_id]).await?;
            }
            Fact::DirectPair { a, b } => {
                let value = direct_pair_key(account_id, a, b);
                if let ClaimOutcome::Taken(holder) =
                    claims::claim(conn, account_id, DIRECT_PAIR_CLAIM, &value, stream).await?
                {
                    return Err(DispatchError::Claimed { kind: DIRECT_PAIR_CLAIM, holder });
                }
            }
            Fact::PairFreed => {
                sqlx::query(
                    "DELETE FROM claims WHERE kind = $1 AND owner_stream_type = $2 AND owner_stream_id = $3",
                )
                .bind(DIRECT_PAIR_CLAIM)
                .bind(&stream.stream_type)
                .bind(&stream.stream_id)
                .execute(&mut *conn)
                .await?;
            }
            // From the version the command was decided on only: an edit or deletion decided in a
            // group read the message's facts before the lock, and another may have landed since.
            Fact::Edited { message_id, version } => {
                let moved = sqlx::query(
                    "UPDATE message_facts SET version = $2 WHERE message_id = $1 AND version = $2 - 1",
                )
                .bind(message_id)
                .bind(version)
                .execute(&mut *conn)
                .await?;
                stale_unless_moved(conn, moved.rows_affected(), message_id).await?;
            }
            Fact::Deleted { message_id, version } => {
                let moved = sqlx::query(
                    "UPDATE message_facts SET deleted = true, version = $2 \
                     WHERE message_id = $1 AND version = $2 - 1 AND NOT deleted",
                )
                .bind(message_id)
                .bind(version)
                .execute(&mut *conn)
                .await?;
                stale_unless_moved(conn, moved.rows_affected(), message_id).await?;
            }
            Fact::Reacted { reaction_id, message_id, conversation_id, user_id, emoji } => {
                // Only on a message that is not deleted, as seen under the conversation's lock: a
                // reaction decided in a group read the message's fact before the lock.
                let added = sqlx::query(
                    "INSERT INTO reaction_facts (reaction_id, message_id, conversation_id, account_id, user_id, emoji) \
                     SELECT $1, $2, $3, $4, $5, $6 \
                     WHERE EXISTS (SELECT 1 FROM message_facts WHERE message_id = $2 AND NOT deleted)",
                )
                .bind(reaction_id)
                .bind(message_id)
                .bind(conversation_id)
                .bind(account_id)
                .bind(user_id)
                .bind(emoji)
                .execute(&mut *conn)
                .await?;
                if added.rows_affected() == 0 {
                    return Err(DispatchError::Domain(ConversationError::MessageDeleted.into()));
                }
            }
            Fact::Unreacted { reaction_id } => {
                // A removal decided in a group read the row before the lock: one that landed
                // meanwhile may have taken it.
                let removed = sqlx::query("DELETE FROM reaction_facts WHERE reaction_id = $1")
                    .bind(reaction_id)
                    .execute(&mut *conn)
                    .await?;
                if removed.rows_affected() == 0 {
                    return Err(DispatchError::Domain(ConversationError::ReactionNotFound.into()));
                }
            }
        }
        Ok(())
    }
}

/// Refuses a message's change whose facts moved after it was decided, naming the version the
/// message is at now.
async fn stale_unless_moved(
    conn: &mut PgConnection,
    rows: u64,
    message_id: Uuid,
) -> Result<(), DispatchError> {
    if rows == 1 {
        return Ok(());
    }
    let (current,): (i32,) = sqlx::query_as("SELECT version FROM message_facts WHERE message_id = $1")
        .bind(message_id)
        .fetch_one(&mut *conn)
        .await?;
    Err(DispatchError::Domain(ConversationError::StaleMessage { current }.into()))
}
