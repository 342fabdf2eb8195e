//! Analytics: counters kept by a projection as events arrive, checked against a recomputation
//! from the log for every day of a month of traffic (recorded on past days through the store's
//! clock); days sealed once however many sealers run; a rebuild reproduces every row.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Days, NaiveDate, Utc};
use clap::Parser;
use parley_projections::read_models::AnalyticsProjection;
use parley_projections::rebuild;
use parley_tests::server::{TestServer, User};
use parley_tests::{assert_same_rows, dump};
use reqwest::Method;
use serde_json::{json, Value};

const DAYS: u64 = 30;

fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 10, 1).unwrap()
}

/// The store records events at the time this clock is set to (moved by hand).
struct DayClock(Arc<AtomicI64>);

impl DayClock {
    fn install(s: &TestServer) -> Self {
        let now = Arc::new(AtomicI64::new(Utc::now().timestamp_micros()));
        let read = now.clone();
        s.t.app.store.use_clock(Arc::new(move || {
            // Each event a microsecond later than the one before, within the day set.
            let at = read.fetch_add(1, Ordering::SeqCst);
            DateTime::from_timestamp_micros(at).unwrap()
        }));
        Self(now)
    }

    fn set_day(&self, day: NaiveDate) {
        let noon = day.and_hms_opt(12, 0, 0).unwrap().and_utc();
        self.0.store(noon.timestamp_micros(), Ordering::SeqCst);
    }
}

/// A month of traffic: each day some posts, reactions, members, conversations and calls.
async fn a_month_of_traffic(s: &TestServer, clock: &DayClock) -> (User, User) {
    clock.set_day(first_day());
    let owner = s.register("owner@example.com").await;
    let admin = s.invite_as(&owner, "admin@example.com", "admin").await;
    let mut members = vec![s.invite_member(&owner, "m0@example.com").await];
    let mut group = s.group(&owner, &[&members[0], &admin]).await;
    for d in 0..DAYS {
        let day = first_day().checked_add_days(Days::new(d)).unwrap();
        clock.set_day(day);
        if d % 7 == 3 {
            let member = s.invite_member(&owner, &format!("m{d}@example.com")).await;
            members.push(member);
            let refs: Vec<&User> = members.iter().chain([&admin]).collect();
            group = s.group(&owner, &refs).await;
        }
        if d % 6 == 5 {
            continue; // a quiet day: only zeros
        }
        let messages = format!("/api/v1/conversations/{group}/messages");
        for i in 0..(d % 4 + 1) {
            let author = if i % 2 == 0 { &owner } else { &members[(d as usize) % members.len()] };
            let posted = s.post(&messages, &author.token, json!({"body": format!("day {d} #{i}")})).await;
            assert_eq!(posted.status, 201, "{:?}", posted.body);
            if i == 0 && d % 2 == 0 {
                let id = posted.data()["id"].clone();
                let r =
                    s.post("/api/v1/reactions", &admin.token, json!({"message_id": id, "emoji": "👍"})).await;
                assert_eq!(r.status, 201, "{:?}", r.body);
            }
        }
        if d % 5 == 0 {
            let calls = format!("/api/v1/conversations/{group}/calls");
            let started = s.post(&calls, &owner.token, json!({"kind": "audio"})).await;
            assert_eq!(started.status, 201, "{:?}", started.body);
            let call = started.data()["id"].as_str().unwrap().to_owned();
            s.rung(&call).await;
            let ended =
                s.call(Method::DELETE, &format!("{calls}/{call}"), Some(&owner.token), None, &[]).await;
            assert_eq!(ended.status, 200, "{:?}", ended.body);
        }
    }
    (owner, admin)
}

/// The month's rows as the API shows them, once the read model has everything so far.
async fn month(s: &TestServer, owner: &User) -> Vec<Value> {
    s.t.settle().await;
    let head = s.t.app.store.head().await.unwrap().to_string();
    let last = first_day().checked_add_days(Days::new(DAYS - 1)).unwrap();
    let path = format!("/api/v1/analytics/daily?from={}&to={last}", first_day());
    let a = s.get_at(&path, &owner.token, &head).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.data().as_array().unwrap().clone()
}

/// A day recounted: date, messages, active users, new conversations, new members, reactions,
/// calls, call minutes.
type Recount = (NaiveDate, i64, i64, i64, i64, i64, i64, f64);

/// The same counters, recomputed from the log.
async fn recomputed(s: &TestServer, account: &str) -> Vec<Value> {
    let rows: Vec<Recount> = sqlx::query_as(
        "SELECT d::date, \
           count(*) FILTER (WHERE event_type = 'MessagePosted'), \
           count(DISTINCT metadata->>'actor_id') FILTER (WHERE metadata->>'actor_type' = 'user'), \
           count(*) FILTER (WHERE event_type = 'ConversationStarted'), \
           count(*) FILTER (WHERE event_type = 'UserRegistered'), \
           count(*) FILTER (WHERE event_type = 'ReactionAdded'), \
           count(*) FILTER (WHERE event_type = 'CallStarted'), \
           round(coalesce(sum((payload->>'duration_s')::bigint) FILTER (WHERE event_type = 'CallEnded'), 0) / 60.0, 1)::float8 \
         FROM generate_series($2::date, $3::date, interval '1 day') d \
         LEFT JOIN events ON account_id = $1::uuid AND (recorded_at AT TIME ZONE 'UTC')::date = d::date \
         GROUP BY d ORDER BY d",
    )
    .bind(account)
    .bind(first_day())
    .bind(first_day().checked_add_days(Days::new(DAYS - 1)).unwrap())
    .fetch_all(s.t.app.store.pool())
    .await
    .unwrap();
    rows.into_iter()
        .map(|(date, messages, active, conversations, members, reactions, calls, minutes)| {
            json!({"date": date, "messages": messages, "active_users": active,
                   "new_conversations": conversations, "new_members": members, "reactions": reactions,
                   "calls": calls, "call_minutes": minutes})
        })
        .collect()
}

fn counters(row: &Value) -> Value {
    let mut row = row.clone();
    let object = row.as_object_mut().unwrap();
    object.remove("sealed");
    object.remove("computed_at");
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_day_of_a_month_equals_a_recomputation_and_is_sealed_once_and_rebuilt_alike() {
    // The ring timer runs from a call's recorded time, here a past day: a year keeps the month's
    // calls ringing until they are hung up.
    let s = TestServer::start_with(|c| c.call_ring_seconds = 365 * 24 * 3600).await;
    let clock = DayClock::install(&s);
    let (owner, admin) = a_month_of_traffic(&s, &clock).await;

    // Every day of the month, quiet ones included, counted as the log says.
    let shown = month(&s, &owner).await;
    assert_eq!(shown.len(), DAYS as usize);
    let expected = recomputed(&s, &owner.account_id).await;
    assert_eq!(shown.iter().map(counters).collect::<Vec<_>>(), expected);
    assert!(shown.iter().all(|r| r["sealed"] == false && r["computed_at"].is_null()));
    assert!(expected.iter().any(|r| r["messages"] == 0) && expected.iter().any(|r| r["calls"] == 1));

    // The month is over: two sealers (two apps on the database, as two nodes) seal each day at
    // once; each day is sealed once.
    clock.set_day(first_day().checked_add_days(Days::new(DAYS)).unwrap());
    let other = parley_api::App::connect_with(
        &s.t.config,
        false,
        parley_commands::password::PasswordHasher::fast_insecure(),
    )
    .await
    .unwrap();
    other.store.use_clock(Arc::new(move || {
        first_day().checked_add_days(Days::new(DAYS)).unwrap().and_hms_opt(0, 5, 0).unwrap().and_utc()
    }));
    let (one, two) = (s.t.app.sealer(), other.sealer());
    for d in 0..DAYS {
        let day = first_day().checked_add_days(Days::new(d)).unwrap();
        let (a, b) = tokio::join!(one.seal(day, None), two.seal(day, None));
        assert_eq!((a.unwrap(), b.unwrap()), (1, 1), "one account, sealed by both");
    }
    let (seals, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT stream_id) FROM events WHERE event_type = 'AnalyticsDaySealed'",
    )
    .fetch_one(s.t.app.store.pool())
    .await
    .unwrap();
    assert_eq!((seals, distinct), (DAYS as i64, DAYS as i64), "one seal per account and day");
    let sealed = month(&s, &owner).await;
    assert!(sealed.iter().all(|r| r["sealed"] == true && r["computed_at"].is_string()), "{sealed:?}");
    assert_eq!(sealed.iter().map(counters).collect::<Vec<_>>(), expected, "sealing changes no counter");
    // A day not over yet is refused.
    assert!(one.seal(first_day().checked_add_days(Days::new(DAYS)).unwrap(), None).await.is_err());

    // A rebuild reproduces every row, sealed ones included.
    let pool = s.t.app.store.pool();
    let (daily, users) = (dump(pool, "analytics_daily").await, dump(pool, "analytics_active_users").await);
    rebuild(&s.t.app.store, Arc::new(AnalyticsProjection), s.t.app.lease_options(), |_| {}).await.unwrap();
    assert_same_rows(&dump(pool, "analytics_daily").await, &daily, "analytics_daily after a rebuild");
    assert_same_rows(&dump(pool, "analytics_active_users").await, &users, "active users after a rebuild");

    // A day's active users: names and emails for the owner, pseudonyms for an admin.
    let day = first_day().checked_add_days(Days::new(4)).unwrap();
    let named = s.get(&format!("/api/v1/analytics/users?date={day}"), &owner.token).await;
    assert_eq!(named.status, 200, "{:?}", named.body);
    let named = named.data().as_array().unwrap().clone();
    let expected_active = shown[4]["active_users"].as_i64().unwrap() as usize;
    assert_eq!(named.len(), expected_active);
    assert!(named.iter().any(|u| u["email"] == "owner@example.com"), "{named:?}");
    let hidden = s.get(&format!("/api/v1/analytics/users?date={day}"), &admin.token).await;
    let hidden = hidden.data().as_array().unwrap().clone();
    assert_eq!(hidden.len(), named.len());
    assert!(hidden.iter().all(|u| u["pseudonym"].as_str().is_some_and(|p| p.starts_with("user-"))
        && u.get("email").is_none()
        && u.get("name").is_none()
        && u.get("user_id").is_none()));
    let again = s.get(&format!("/api/v1/analytics/users?date={day}"), &admin.token).await;
    assert_eq!(again.data().as_array().unwrap(), &hidden, "stable pseudonyms");
    other.store.pool().close().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ranges_dates_and_permissions_are_refused() {
    let s = TestServer::start().await;
    let owner = s.register("owner@example.com").await;
    let member = s.invite_member(&owner, "member@example.com").await;
    let before = s.events().await;
    for (query, code) in [
        ("from=2026-11-02&to=2026-11-01", 400),
        ("from=2025-01-01&to=2026-11-01", 400),
        ("from=yesterday", 400),
        ("from=2026-11-01&format=xml", 400),
    ] {
        s.get(&format!("/api/v1/analytics/daily?{query}"), &owner.token)
            .await
            .assert_error(code, "bad_request");
    }
    s.get("/api/v1/analytics/users?date=13/11/2026", &owner.token).await.assert_error(400, "bad_request");
    s.get("/api/v1/analytics/users", &owner.token).await.assert_error(400, "bad_request");
    s.get("/api/v1/analytics/daily", &member.token).await.assert_error(403, "forbidden");
    s.get("/api/v1/analytics/users?date=2026-11-01", &member.token).await.assert_error(403, "forbidden");
    assert_eq!(s.events().await, before, "nothing written");

    // The account's first day is today: one live row, and CSV on asking.
    let today = Utc::now().date_naive();
    let csv = s
        .call(
            Method::GET,
            "/api/v1/analytics/daily?format=csv",
            Some(&owner.token),
            None,
            &[("x-min-position", &owner.position)],
        )
        .await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let text = csv.body.as_str().unwrap().to_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "date,messages,active_users,new_conversations,new_members,reactions,calls,call_minutes,sealed,computed_at");
    assert!(lines.len() <= 2 && lines.iter().skip(1).all(|l| l.starts_with(&today.to_string())), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn the_backfill_command_seals_the_past_days_of_an_account_from_its_first_one() {
    let t = parley_tests::TestApp::new().await;
    let today = Utc::now().date_naive();
    let day = |back: u64| today.checked_sub_days(Days::new(back)).unwrap();
    let at = Arc::new(AtomicI64::new(day(3).and_hms_opt(9, 0, 0).unwrap().and_utc().timestamp_micros()));
    let read = at.clone();
    t.app.store.use_clock(Arc::new(move || {
        DateTime::from_timestamp_micros(read.fetch_add(1, Ordering::SeqCst)).unwrap()
    }));
    let (owner, _) = t.owner("owner@example.com").await;
    at.store(day(2).and_hms_opt(9, 0, 0).unwrap().and_utc().timestamp_micros(), Ordering::SeqCst);
    let group = t.app.commands.start_group(&owner, "General", &[]).await.unwrap();
    t.app.commands.post_message(&owner, group.aggregate.id.unwrap(), "hello").await.unwrap();
    t.settle().await;

    // No server runs the analytics read model: the command brings it up to date itself. Days
    // before the account's first are not sealed; every day from it to yesterday is.
    let url = t.db.url();
    let (from, to) = (day(6).to_string(), day(1).to_string());
    let argv = ["parley", "--database-url", &url, "analytics", "backfill", "--from", &from, "--to", &to];
    let cli = parley_api::cli::Cli::try_parse_from(argv).unwrap();
    assert_eq!(parley_api::cli::run(cli).await.unwrap(), std::process::ExitCode::SUCCESS);
    let sealed: Vec<(String,)> = sqlx::query_as(
        "SELECT stream_id FROM events WHERE event_type = 'AnalyticsDaySealed' ORDER BY stream_id",
    )
    .fetch_all(t.app.store.pool())
    .await
    .unwrap();
    let account = owner.account_id;
    let expected: Vec<(String,)> = [3, 2, 1].iter().map(|b| (format!("{account}:{}", day(*b)),)).collect();
    assert_eq!(sealed, expected);
    // The read model applied the seals before the command ended.
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM analytics_daily WHERE sealed")
        .fetch_one(t.app.store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 3);
    // Again: nothing more. Today is not over: refused.
    let cli = parley_api::cli::Cli::try_parse_from(argv).unwrap();
    assert_eq!(parley_api::cli::run(cli).await.unwrap(), std::process::ExitCode::SUCCESS);
    let today = today.to_string();
    let argv = ["parley", "--database-url", &url, "analytics", "backfill", "--from", &today, "--to", &today];
    assert!(parley_api::cli::run(parley_api::cli::Cli::try_parse_from(argv).unwrap()).await.is_err());
    let (count,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM events WHERE event_type = 'AnalyticsDaySealed'")
            .fetch_one(t.app.store.pool())
            .await
            .unwrap();
    assert_eq!(count, 3);
    t.finish().await;
}
