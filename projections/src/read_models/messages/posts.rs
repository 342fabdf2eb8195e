//! How the messages read model writes posts: gathered into one multi-row statement, or, for a
//! generation a rebuild fills, one `COPY`; each month's partition made when the month begins.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use parley_eventstore::RecordedEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::ProjectionError;

/// Rows for one multi-row insert.
#[derive(Default)]
pub(super) struct Rows {
    ids: Vec<Uuid>,
    accounts: Vec<Uuid>,
    conversations: Vec<Uuid>,
    seqs: Vec<i64>,
    authors: Vec<Uuid>,
    bodies: Vec<String>,
    /// Each post's mentions as an array literal (`{}` for most): arrays of arrays of differing
    /// lengths do not bind, and a literal costs one parse where a JSON array took a subquery a row.
    mentions: Vec<String>,
    created: Vec<DateTime<Utc>>,
}

/// How posts reach the messages table.
#[derive(Clone, Copy)]
pub(super) enum Write {
    /// A multi-row insert that lets a row already there be.
    Insert,
    /// `COPY`: for a generation being filled, where no row is written twice.
    Copy,
}

impl Rows {
    /// Writes the gathered posts (their month's partitions first) and counts them as unread
    /// for every other member who had not read past them.
    /// Gathers one post, as `e` recorded it.
    pub(super) fn push(
        &mut self,
        e: &RecordedEvent,
        message_id: Uuid,
        conversation_id: Uuid,
        author_id: Uuid,
        body: String,
        mentions: &[Uuid],
    ) {
        let listed: Vec<String> = mentions.iter().map(Uuid::to_string).collect();
        self.mentions.push(format!("{{{}}}", listed.join(",")));
        self.ids.push(message_id);
        self.accounts.push(e.account_id);
        self.conversations.push(conversation_id);
        self.seqs.push(e.version);
        self.authors.push(author_id);
        self.bodies.push(body);
        self.created.push(e.recorded_at);
    }

    pub(super) async fn flush(
        &mut self,
        conn: &mut PgConnection,
        write: Write,
    ) -> Result<(), ProjectionError> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let months: BTreeSet<(i32, u32)> = self.created.iter().map(|c| (c.year(), c.month())).collect();
        for (year, month) in months {
            ensure_partition(&mut *conn, year, month).await?;
        }
        let rows = std::mem::take(self);
        match write {
            Write::Insert => rows.insert(conn).await?,
            Write::Copy => rows.copy(conn).await?,
        }
        sqlx::query(
            "UPDATE read_states r SET unread_count = r.unread_count + v.n \
             FROM (SELECT p.conversation_id, s.user_id, count(*) AS n \
                   FROM unnest($1::uuid[], $2::uuid[], $3::bigint[]) AS p(conversation_id, author_id, seq) \
                   JOIN read_states s ON s.conversation_id = p.conversation_id AND s.user_id <> p.author_id \
                                     AND s.last_read_seq < p.seq \
                   GROUP BY 1, 2) v \
             WHERE r.conversation_id = v.conversation_id AND r.user_id = v.user_id",
        )
        .bind(&rows.conversations)
        .bind(&rows.authors)
        .bind(&rows.seqs)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn insert(&self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        sqlx::query(
            "INSERT INTO messages (id, account_id, conversation_id, seq, author_id, body, mentions, created_at) \
             SELECT id, account_id, conversation_id, seq, author_id, body, mentions::uuid[], created_at \
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[], $5::uuid[], $6::text[], \
                         $7::text[], $8::timestamptz[]) \
                  AS p(id, account_id, conversation_id, seq, author_id, body, mentions, created_at) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&self.ids)
        .bind(&self.accounts)
        .bind(&self.conversations)
        .bind(&self.seqs)
        .bind(&self.authors)
        .bind(&self.bodies)
        .bind(&self.mentions)
        .bind(&self.created)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// The rows in `COPY`'s text format, sent in one message.
    async fn copy(&self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        use std::fmt::Write as _;
        let mut data = String::with_capacity(self.ids.len() * 256);
        for i in 0..self.ids.len() {
            let created = self.created[i].to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            let _ = write!(
                data,
                "{}\t{}\t{}\t{}\t{}\t",
                self.ids[i], self.accounts[i], self.conversations[i], self.seqs[i], self.authors[i]
            );
            copy_text(&mut data, &self.bodies[i]);
            let _ = writeln!(data, "\t{}\t{created}", self.mentions[i]);
        }
        let mut copy = conn
            .copy_in_raw(
                "COPY messages (id, account_id, conversation_id, seq, author_id, body, mentions, created_at) \
                 FROM STDIN",
            )
            .await?;
        if let Err(e) = copy.send(data.into_bytes()).await {
            copy.abort(e.to_string()).await?;
            return Err(e.into());
        }
        copy.finish().await?;
        Ok(())
    }
}

/// Appends `value` as a field of `COPY`'s text format: a backslash, and the characters that
/// separate fields and rows, escaped.
fn copy_text(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
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
