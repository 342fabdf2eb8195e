//! `/api/v1/analytics`: the stored daily rows of an account (JSON or CSV) and a day's active
//! users. Read from the analytics read model, never computed from the log on read.

use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{Days, NaiveDate, Utc};
use parley_aggregates::permissions::Permission;
use parley_projections::read_models::analytics::query::{self as analytics, DailyRow};
use serde::Deserialize;
use serde_json::json;

use super::Routes;
use crate::http::auth::Principal;
use crate::http::error::{ApiError, Code};
use crate::http::extract::{ApiQuery, Reading};
use crate::http::openapi::schemas::schema_of;
use crate::http::openapi::shapes::{ActiveUser, DateRange, OfDate};
use crate::http::openapi::{Doc, Meta};
use crate::http::respond::{envelope, respond};

pub fn router() -> Routes {
    Routes::default()
        .get("/analytics/daily", daily)
        .doc(
            Doc::new("Daily snapshots, one row per UTC day (`format=csv` for a file)")
                .describe("`from` after `to`, or a range over 366 days: 400. Today's row is live and unsealed.")
                .permission("analytics.view")
                .query::<DailyQuery>()
                .lists::<DailyRow>(Meta::Fields(schema_of::<DateRange>()))
                .alternative("text/csv")
                .reads(),
        )
        .get("/analytics/users", users)
        .doc(
            Doc::new("A day's active users with their message counts")
                .describe("Names and emails only with `analytics.export_pii`; otherwise a stable pseudonym per user.")
                .permission("analytics.view")
                .query::<UsersQuery>()
                .lists::<ActiveUser>(Meta::Fields(schema_of::<OfDate>()))
                .reads(),
        )
}

/// The longest range one request reads.
const MAX_DAYS: u64 = 366;
/// The range when none is given: the last 30 days, today included.
const DEFAULT_DAYS: u64 = 29;

#[derive(Deserialize, utoipa::IntoParams)]
struct DailyQuery {
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    format: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn daily(
    principal: Principal,
    reads: Reading,
    ApiQuery(q): ApiQuery<DailyQuery>,
) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::AnalyticsView)?;
    let today = Utc::now().date_naive();
    let to = q.to.unwrap_or(today);
    let from = q.from.unwrap_or_else(|| to.checked_sub_days(Days::new(DEFAULT_DAYS)).unwrap_or(to));
    if from > to {
        return Err(ApiError::new(Code::BadRequest, "from is after to"));
    }
    if (to - from).num_days() >= MAX_DAYS as i64 {
        return Err(ApiError::new(Code::BadRequest, format!("a range covers at most {MAX_DAYS} days")));
    }
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(ApiError::new(Code::BadRequest, format!("format {other:?}: json or csv"))),
    };
    let rows = analytics::daily(&reads.get(), principal.account_id(), from, to, today).await?;
    if csv {
        return Ok(as_csv(&rows, from, to));
    }
    let meta = json!({"from": from, "to": to});
    Ok(respond(StatusCode::OK, envelope(json!(rows), meta, None), None))
}

fn as_csv(rows: &[DailyRow], from: NaiveDate, to: NaiveDate) -> Response {
    let mut out = String::from(
        "date,messages,active_users,new_conversations,new_members,reactions,calls,call_minutes,sealed,computed_at\n",
    );
    for r in rows {
        let computed_at = r.computed_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{:.1},{},{}\n",
            r.date,
            r.messages,
            r.active_users,
            r.new_conversations,
            r.new_members,
            r.reactions,
            r.calls,
            r.call_minutes,
            r.sealed,
            computed_at.unwrap_or_default()
        ));
    }
    let disposition = format!("attachment; filename=\"analytics-{from}-{to}.csv\"");
    ([(CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (CONTENT_DISPOSITION, disposition)], out)
        .into_response()
}

#[derive(Deserialize, utoipa::IntoParams)]
struct UsersQuery {
    date: NaiveDate,
}

#[tracing::instrument(skip_all)]
async fn users(
    principal: Principal,
    reads: Reading,
    ApiQuery(q): ApiQuery<UsersQuery>,
) -> Result<Response, ApiError> {
    principal.ctx.require(Permission::AnalyticsView)?;
    let account = principal.account_id();
    let pii = principal.ctx.actor.can(Permission::AnalyticsExportPii);
    let users = analytics::active_users(&reads.get(), account, q.date).await?;
    let shown: Vec<_> = users
        .into_iter()
        .map(|u| {
            if pii {
                json!({"user_id": u.user_id, "name": u.name, "email": u.email, "messages": u.messages})
            } else {
                json!({"pseudonym": pseudonym(account, u.user_id), "messages": u.messages})
            }
        })
        .collect();
    Ok(respond(StatusCode::OK, envelope(json!(shown), json!({"date": q.date}), None), None))
}

/// A stable stand-in for a user in analytics shown without personal data: the same user on every
/// day, different users apart, and neither their name, email nor id.
fn pseudonym(account: uuid::Uuid, user: uuid::Uuid) -> String {
    let digest = parley_commands::tokens::hash(&format!("parley-analytics-pseudonym:{account}:{user}"));
    format!("user-{}", &digest[..12])
}
