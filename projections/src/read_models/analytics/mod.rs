//! Analytics, computed as events arrive and stored: per account and UTC day, the counters of
//! API.md (messages, active users, new conversations, new members, reactions, calls, call
//! minutes), and the day's active users with their message counts. A day's row is sealed by its
//! `AnalyticsDaySealed` event (the seal job's, once the day is over and counted). Reads never
//! aggregate the log; a rebuild reproduces every row, sealed ones included.
//!
//! Definitions: a day is the UTC day an event was recorded; `active_users` counts the distinct
//! users who appended any event that day (the actor of a user's request); `new_members` counts
//! users who joined the account (`UserRegistered`); `calls` counts calls started, and
//! `call_seconds` sums the durations of calls that ended that day (shown as minutes).

use std::collections::HashMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use parley_aggregates::catalog;
use parley_eventstore::RecordedEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::ProjectionError;
use crate::projection::{Decisions, Projection};
use crate::reads::ReadModel;

pub mod query;

pub struct AnalyticsProjection;

/// Every event counts (each has a day and may have a user behind it).
static EVERY_EVENT_TYPE: LazyLock<Vec<&'static str>> = LazyLock::new(|| catalog::event_types().collect());

/// What one day of one account gained in a batch.
#[derive(Default)]
struct Gains {
    messages: i64,
    new_conversations: i64,
    new_members: i64,
    reactions: i64,
    calls: i64,
    call_seconds: i64,
    /// When the day was sealed, if it was in this batch.
    sealed_at: Option<DateTime<Utc>>,
}

#[async_trait]
impl Projection for AnalyticsProjection {
    fn name(&self) -> &'static str {
        ReadModel::Analytics.name()
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["analytics_daily", "analytics_active_users"]
    }

    fn schema(&self) -> &'static str {
        r#"
        CREATE TABLE analytics_daily (
            account_id        uuid NOT NULL,
            day               date NOT NULL,
            messages          bigint NOT NULL DEFAULT 0,
            active_users      bigint NOT NULL DEFAULT 0,
            new_conversations bigint NOT NULL DEFAULT 0,
            new_members       bigint NOT NULL DEFAULT 0,
            reactions         bigint NOT NULL DEFAULT 0,
            calls             bigint NOT NULL DEFAULT 0,
            call_seconds      bigint NOT NULL DEFAULT 0,
            sealed            boolean NOT NULL DEFAULT false,
            computed_at       timestamptz,
            PRIMARY KEY (account_id, day)
        );
        CREATE TABLE analytics_active_users (
            account_id uuid NOT NULL,
            day        date NOT NULL,
            user_id    uuid NOT NULL,
            messages   bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (account_id, day, user_id)
        );
        "#
    }

    fn decides(&self) -> Decisions {
        Decisions { handles: EVERY_EVENT_TYPE.as_slice(), ignores: &[], ignores_streams: &[] }
    }

    async fn apply(&self, conn: &mut PgConnection, events: &[&RecordedEvent]) -> Result<(), ProjectionError> {
        // Gathered in memory, written in two statements per batch (a rebuild passes every event
        // of the log through here).
        let mut days: HashMap<(Uuid, NaiveDate), Gains> = HashMap::new();
        let mut actives: HashMap<(Uuid, NaiveDate, Uuid), i64> = HashMap::new();
        for e in events {
            let day = e.recorded_at.date_naive();
            let gains = days.entry((e.account_id, day)).or_default();
            match e.event_type.as_str() {
                "MessagePosted" => gains.messages += 1,
                "ConversationStarted" => gains.new_conversations += 1,
                "UserRegistered" => gains.new_members += 1,
                "ReactionAdded" => gains.reactions += 1,
                "CallStarted" => gains.calls += 1,
                "CallEnded" => {
                    gains.call_seconds += e.payload.get("duration_s").and_then(|d| d.as_i64()).unwrap_or(0)
                }
                "AnalyticsDaySealed" => {
                    // The sealed day is the one it names, not the day it was sealed on.
                    let sealed: Option<NaiveDate> =
                        e.payload.get("day").and_then(|d| d.as_str()).and_then(|d| d.parse().ok());
                    if let Some(sealed) = sealed {
                        days.entry((e.account_id, sealed)).or_default().sealed_at = Some(e.recorded_at);
                    }
                }
                _ => {}
            }
            if let Some(user) = acting_user(e) {
                let messages = actives.entry((e.account_id, day, user)).or_default();
                if e.event_type == "MessagePosted" {
                    *messages += 1;
                }
            }
        }
        let new_actives = record_actives(conn, actives).await?;
        record_days(conn, days, new_actives).await
    }
}

/// The user whose request appended `e`, if a user's did.
fn acting_user(e: &RecordedEvent) -> Option<Uuid> {
    (e.metadata.get("actor_type").and_then(|t| t.as_str()) == Some("user")).then(|| e.actor_id()).flatten()
}

/// Records each day's active users (adding their messages); returns how many users each day
/// gained who were not active on it before.
async fn record_actives(
    conn: &mut PgConnection,
    actives: HashMap<(Uuid, NaiveDate, Uuid), i64>,
) -> Result<HashMap<(Uuid, NaiveDate), i64>, ProjectionError> {
    let mut new = HashMap::new();
    if actives.is_empty() {
        return Ok(new);
    }
    let (mut accounts, mut days, mut users, mut messages) = (vec![], vec![], vec![], vec![]);
    for ((account, day, user), n) in actives {
        accounts.push(account);
        days.push(day);
        users.push(user);
        messages.push(n);
    }
    // `xmax = 0` tells a row this statement inserted from one it updated.
    let rows: Vec<(Uuid, NaiveDate, bool)> = sqlx::query_as(
        "INSERT INTO analytics_active_users (account_id, day, user_id, messages) \
         SELECT * FROM unnest($1::uuid[], $2::date[], $3::uuid[], $4::bigint[]) \
         ON CONFLICT (account_id, day, user_id) \
         DO UPDATE SET messages = analytics_active_users.messages + excluded.messages \
         RETURNING account_id, day, xmax = 0",
    )
    .bind(&accounts)
    .bind(&days)
    .bind(&users)
    .bind(&messages)
    .fetch_all(&mut *conn)
    .await?;
    for (account, day, inserted) in rows {
        if inserted {
            *new.entry((account, day)).or_default() += 1;
        }
    }
    Ok(new)
}

/// Adds a batch's gains to each day's row (creating it with zeros first).
async fn record_days(
    conn: &mut PgConnection,
    days: HashMap<(Uuid, NaiveDate), Gains>,
    new_actives: HashMap<(Uuid, NaiveDate), i64>,
) -> Result<(), ProjectionError> {
    let n = days.len();
    let (mut accounts, mut dates, mut actives) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut messages, mut conversations, mut members) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut reactions, mut calls, mut seconds, mut sealed_at) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for ((account, day), g) in days {
        actives.push(new_actives.get(&(account, day)).copied().unwrap_or(0));
        accounts.push(account);
        dates.push(day);
        messages.push(g.messages);
        conversations.push(g.new_conversations);
        members.push(g.new_members);
        reactions.push(g.reactions);
        calls.push(g.calls);
        seconds.push(g.call_seconds);
        sealed_at.push(g.sealed_at);
    }
    sqlx::query(
        "INSERT INTO analytics_daily AS d (account_id, day, messages, active_users, new_conversations, \
           new_members, reactions, calls, call_seconds, sealed, computed_at) \
         SELECT a, day, m, u, c, nm, r, k, s, sealed_at IS NOT NULL, sealed_at \
         FROM unnest($1::uuid[], $2::date[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], \
                     $7::bigint[], $8::bigint[], $9::bigint[], $10::timestamptz[]) \
              AS g(a, day, m, u, c, nm, r, k, s, sealed_at) \
         ON CONFLICT (account_id, day) DO UPDATE SET \
           messages = d.messages + excluded.messages, \
           active_users = d.active_users + excluded.active_users, \
           new_conversations = d.new_conversations + excluded.new_conversations, \
           new_members = d.new_members + excluded.new_members, \
           reactions = d.reactions + excluded.reactions, \
           calls = d.calls + excluded.calls, \
           call_seconds = d.call_seconds + excluded.call_seconds, \
           sealed = d.sealed OR excluded.sealed, \
           computed_at = COALESCE(d.computed_at, excluded.computed_at)",
    )
    .bind(&accounts)
    .bind(&dates)
    .bind(&messages)
    .bind(&actives)
    .bind(&conversations)
    .bind(&members)
    .bind(&reactions)
    .bind(&calls)
    .bind(&seconds)
    .bind(&sealed_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
