//! Messages, partitioned by month (as the source chat app does), for cursor pagination within
//! a conversation. `seq` is the conversation stream's version of the `MessagePosted` event:
//! increasing within a conversation, in the order messages were accepted.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use parley_aggregates::conversation::ConversationEvent;
use parley_eventstore::RecordedEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use super::decode;
use crate::error::ProjectionError;
use crate::projection::Projection;

pub struct MessagesProjection;

/// Rows for one multi-row insert.
#[derive(Default)]
struct Rows {
    ids: Vec<Uuid>,
    accounts: Vec<Uuid>,
    conversations: Vec<Uuid>,
    seqs: Vec<i64>,
    authors: Vec<Uuid>,
    bodies: Vec<String>,
    created: Vec<DateTime<Utc>>,
}

#[async_trait]
impl Projection for MessagesProjection {
    fn name(&self) -> &'static str {
        "messages"
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["messages"]
    }

    fn schema(&self) -> &'static str {
        r#"
        CREATE TABLE messages (
            id              uuid NOT NULL,
            account_id      uuid NOT NULL,
            conversation_id uuid NOT NULL,
            seq             bigint NOT NULL,
            author_id       uuid NOT NULL,
            body            text,
            created_at      timestamptz NOT NULL,
            edited_at       timestamptz,
            deleted         boolean NOT NULL DEFAULT false,
            version         int NOT NULL DEFAULT 1,
            PRIMARY KEY (id, created_at)
        ) PARTITION BY RANGE (created_at);
        -- Pages of a conversation, both directions.
        CREATE INDEX messages_conversation_seq_idx ON messages (conversation_id, seq);
        "#
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == "MessagePosted"
    }

    async fn apply(&self, conn: &mut PgConnection, events: &[&RecordedEvent]) -> Result<(), ProjectionError> {
        let mut rows = Rows::default();
        let mut months = BTreeSet::new();
        for e in events {
            if let ConversationEvent::MessagePosted { message_id, conversation_id, author_id, body } =
                decode(e)?
            {
                months.insert((e.recorded_at.year(), e.recorded_at.month()));
                rows.ids.push(message_id);
                rows.accounts.push(e.account_id);
                rows.conversations.push(conversation_id);
                rows.seqs.push(e.version);
                rows.authors.push(author_id);
                rows.bodies.push(body);
                rows.created.push(e.recorded_at);
            }
        }
        for (year, month) in months {
            ensure_partition(&mut *conn, year, month).await?;
        }
        sqlx::query(
            "INSERT INTO messages (id, account_id, conversation_id, seq, author_id, body, created_at) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[], $5::uuid[], $6::text[], \
                                  $7::timestamptz[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(rows.ids)
        .bind(rows.accounts)
        .bind(rows.conversations)
        .bind(rows.seqs)
        .bind(rows.authors)
        .bind(rows.bodies)
        .bind(rows.created)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// Creates the month's partition in the generation's schema (the first on `search_path`) unless
/// it exists. Checked first, so the parent is locked only when a month begins.
async fn ensure_partition(conn: &mut PgConnection, year: i32, month: u32) -> Result<(), ProjectionError> {
    let name = format!("messages_y{year:04}m{month:02}");
    let (exists,): (bool,) =
        sqlx::query_as("SELECT to_regclass($1) IS NOT NULL").bind(&name).fetch_one(&mut *conn).await?;
    if exists {
        return Ok(());
    }
    let from = Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).single();
    let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    let to = Utc.with_ymd_and_hms(next_year, next_month, 1, 0, 0, 0).single();
    let (Some(from), Some(to)) = (from, to) else {
        return Err(ProjectionError::Unknown(format!("month {year}-{month}")));
    };
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS {name} PARTITION OF messages FOR VALUES FROM ('{}') TO ('{}')",
        from.to_rfc3339(),
        to.to_rfc3339()
    );
    sqlx::query(&ddl).execute(&mut *conn).await?;
    Ok(())
}
