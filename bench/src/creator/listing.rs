//! Figure 2: listing a space's experiences, next to `/health` and to the page's own `SELECT`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::http::{percentile, timed_load};
use crate::signals::post;

use super::{get, text, Owner, CLIENTS, PATIENCE, PER_PAGE, ROUNDS};

/// Figure 2: a space of many experiences, listed.
pub(super) struct Listed {
    experiences: usize,
    created_per_s: f64,
    /// The space's `experiences_count` once the read model caught up, and how long after the
    /// last creation.
    kept: i64,
    caught_up: Duration,
    list: Vec<Duration>,
    health: Vec<Duration>,
    raw: Vec<Duration>,
    raw_single: Vec<Duration>,
    raw_counted: Vec<Duration>,
    raw_endpoint: Vec<Duration>,
    rates: [f64; 3],
    failures: u64,
}

/// A page from 1 to `pages`, spread evenly by `(client, n)`.
fn page(client: usize, n: usize, pages: usize) -> usize {
    let mut x = ((client as u64) << 32 | n as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % pages as u64) as usize + 1
}

const PAGE_SQL: &str =
    "SELECT * FROM experiences WHERE space_id = $1 ORDER BY created_at, id LIMIT $2 OFFSET $3";
const COUNT_SQL: &str = "SELECT count(*) FROM experiences WHERE space_id = $1";
/// The endpoint's own two statements (`creator::query::experiences`), as a manager runs them:
/// the space's kept count, and an index range of its experiences.
const KEPT_COUNT_SQL: &str = "SELECT experiences_count FROM spaces WHERE id = $1 AND account_id = $2";
const ENDPOINT_PAGE_SQL: &str = "SELECT * FROM experiences WHERE space_id = $1 AND account_id = $2 \
     ORDER BY created_at, id LIMIT $3 OFFSET $4";

pub(super) async fn listing(
    http: &reqwest::Client,
    base: &str,
    pool: &sqlx::PgPool,
    owner: &Owner,
    experiences: usize,
    seconds: u64,
) -> anyhow::Result<Listed> {
    let space = post(
        http,
        format!("{base}/api/v1/spaces"),
        Some(&owner.token),
        json!({"name": "Catalog", "slug": "catalog"}),
    )
    .await?;
    let space = text(&space["data"]["id"]);
    let started = Instant::now();
    let mut created = futures::stream::iter(0..experiences)
        .map(|i| {
            let (http, token, url) =
                (http.clone(), owner.token.clone(), format!("{base}/api/v1/spaces/{space}/experiences"));
            async move {
                post(
                    &http,
                    url,
                    Some(&token),
                    json!({"name": format!("Course {i}"), "experience_type": "course", "price_cents": 0}),
                )
                .await
            }
        })
        .buffer_unordered(CLIENTS);
    while let Some(done) = created.next().await {
        done?;
    }
    let last = Instant::now();
    let created_per_s = experiences as f64 / started.elapsed().as_secs_f64();
    let kept = loop {
        let shown = get(http, format!("{base}/api/v1/spaces/{space}"), &owner.token, &[]).await?;
        let kept = shown["data"]["experiences_count"].as_i64().unwrap_or(-1);
        if kept >= experiences as i64 || last.elapsed() > PATIENCE {
            break kept;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let caught_up = last.elapsed();
    let space_id: Uuid = space.parse()?;
    let pages = experiences.div_ceil(PER_PAGE).max(1);

    let (mut list, mut health, mut raw, mut raw_single, mut raw_counted) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut rates, mut failures) = ([0.0; 3], 0);
    let mut direct = PgConnection::connect_with(&*pool.connect_options()).await?;
    let (account_id,): (Uuid,) = sqlx::query_as("SELECT account_id FROM spaces WHERE id = $1")
        .bind(space_id)
        .fetch_one(&mut direct)
        .await?;
    let mut raw_endpoint = Vec::new();
    for _ in 0..ROUNDS {
        let (http2, base2, token) = (http.clone(), base.to_owned(), owner.token.clone());
        let url = format!("{base2}/api/v1/spaces/{space}/experiences");
        let (rate, latencies, failed) = timed_load(CLIENTS, seconds, move |client, n| {
            let (http, url, token) = (http2.clone(), url.clone(), token.clone());
            async move {
                let query = [("page", page(client, n, pages)), ("per_page", PER_PAGE)];
                match http.get(url).query(&query).bearer_auth(token).send().await {
                    Ok(r) if r.status() == 200 => true,
                    Ok(r) => {
                        eprintln!("  list: {} {}", r.status(), r.text().await.unwrap_or_default());
                        false
                    }
                    Err(e) => {
                        eprintln!("  list: {e}");
                        false
                    }
                }
            }
        })
        .await?;
        list.extend(latencies);
        rates[0] += rate / ROUNDS as f64;
        failures += failed;

        let (http2, url) = (http.clone(), format!("{base}/health"));
        let (rate, latencies, failed) = timed_load(CLIENTS, seconds, move |_, _| {
            let (http, url) = (http2.clone(), url.clone());
            async move {
                match http.get(url).send().await {
                    Ok(r) if r.status() == 200 => true,
                    Ok(r) => {
                        eprintln!("  health: {}", r.status());
                        false
                    }
                    Err(e) => {
                        eprintln!("  health: {e}");
                        false
                    }
                }
            }
        })
        .await?;
        health.extend(latencies);
        rates[1] += rate / ROUNDS as f64;
        failures += failed;

        let pool2 = pool.clone();
        let (rate, latencies, failed) = timed_load(CLIENTS, seconds, move |client, n| {
            let pool = pool2.clone();
            async move {
                let offset = ((page(client, n, pages) - 1) * PER_PAGE) as i64;
                sqlx::query(PAGE_SQL)
                    .bind(space_id)
                    .bind(PER_PAGE as i64)
                    .bind(offset)
                    .fetch_all(&pool)
                    .await
                    .is_ok_and(|rows| !rows.is_empty())
            }
        })
        .await?;
        raw.extend(latencies);
        rates[2] += rate / ROUNDS as f64;
        failures += failed;

        // One direct connection: the page alone, with the count the endpoint also takes, and
        // the endpoint's own two statements.
        for kind in 0..3 {
            let until = Instant::now() + Duration::from_secs(seconds.div_ceil(2));
            let mut n = 0;
            while Instant::now() < until {
                let offset = ((page(usize::MAX, n, pages) - 1) * PER_PAGE) as i64;
                let t = Instant::now();
                if kind == 2 {
                    sqlx::query(KEPT_COUNT_SQL)
                        .bind(space_id)
                        .bind(account_id)
                        .fetch_one(&mut direct)
                        .await?;
                    sqlx::query(ENDPOINT_PAGE_SQL)
                        .bind(space_id)
                        .bind(account_id)
                        .bind(PER_PAGE as i64)
                        .bind(offset)
                        .fetch_all(&mut direct)
                        .await?;
                } else {
                    if kind == 1 {
                        sqlx::query(COUNT_SQL).bind(space_id).fetch_one(&mut direct).await?;
                    }
                    sqlx::query(PAGE_SQL)
                        .bind(space_id)
                        .bind(PER_PAGE as i64)
                        .bind(offset)
                        .fetch_all(&mut direct)
                        .await?;
                }
                [&mut raw_single, &mut raw_counted, &mut raw_endpoint][kind].push(t.elapsed());
                n += 1;
            }
        }
    }
    direct.close().await?;
    for v in [&mut list, &mut health, &mut raw, &mut raw_single, &mut raw_counted, &mut raw_endpoint] {
        v.sort();
    }
    Ok(Listed {
        experiences,
        created_per_s,
        kept,
        caught_up,
        list,
        health,
        raw,
        raw_single,
        raw_counted,
        raw_endpoint,
        rates,
        failures,
    })
}

impl Listed {
    pub(super) fn print(&self) {
        println!();
        println!(
            "creator: GET /spaces/{{id}}/experiences?page=P&per_page={PER_PAGE} over random pages of a space of {} \
             experiences, {CLIENTS} clients as the owner, {ROUNDS} alternated rounds",
            self.experiences
        );
        println!(
            "  space's experiences_count (kept by the read model) {} (expected {}); read model caught up {:.2} s \
             after the last creation; created through HTTP at {:.0}/s ({CLIENTS} clients)",
            self.kept,
            self.experiences,
            self.caught_up.as_secs_f64(),
            self.created_per_s
        );
        println!("  {:<52} {:>9} {:>9} {:>9}", "(ms)", "p50", "p99", "req/s");
        let row = |what: &str, v: &[Duration], rate: Option<f64>| {
            let rate = rate.map(|r| format!("{r:.0}")).unwrap_or_default();
            println!("  {what:<52} {:>9.2} {:>9.2} {rate:>9}", percentile(v, 0.50), percentile(v, 0.99));
        };
        row("list a page (HTTP)", &self.list, Some(self.rates[0]));
        row("GET /health (HTTP, same clients)", &self.health, Some(self.rates[1]));
        row(&format!("the page's SELECT, {CLIENTS} direct connections"), &self.raw, Some(self.rates[2]));
        row("the page's SELECT, one direct connection", &self.raw_single, None);
        row("count(*) + the page's SELECT, one connection", &self.raw_counted, None);
        row("the endpoint's own count + page statements, one conn", &self.raw_endpoint, None);
        let ratio = |a: &[Duration], b: &[Duration], p: f64| percentile(a, p) / percentile(b, p);
        println!(
            "  ratios p50/p99: list / health {:.2} / {:.2}; list / SELECT ({CLIENTS} conns) {:.2} / {:.2}; \
             list / SELECT (one conn) {:.2} / {:.2}; failures {}",
            ratio(&self.list, &self.health, 0.5),
            ratio(&self.list, &self.health, 0.99),
            ratio(&self.list, &self.raw, 0.5),
            ratio(&self.list, &self.raw, 0.99),
            ratio(&self.list, &self.raw_single, 0.5),
            ratio(&self.list, &self.raw_single, 0.99),
            self.failures
        );
    }
}
