//! The database restarts and goes away under steady posting: the API answers 503 (never 500)
//! and quickly, posting resumes within 2 s of the database being back, and a subscriber that
//! reconnects with its last position misses nothing that was acknowledged.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley_api::{App, Config};
use parley_commands::password::PasswordHasher;
use parley_tests::cluster::PrivateCluster;
use parley_tests::server::{serving, Cable};
use serde_json::{json, Value};
use tokio::sync::watch;

/// What the poster saw: each answer's status and how long it took, and the ids acknowledged.
#[derive(Default)]
struct Seen {
    answers: Vec<(u16, Duration, Instant)>,
    acknowledged: Vec<String>,
}

async fn post(http: &reqwest::Client, url: &str, token: &str, body: &str) -> (u16, Option<String>) {
    match http.post(url).bearer_auth(token).json(&json!({"body": body})).send().await {
        Ok(answer) => {
            let status = answer.status().as_u16();
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            (status, body["data"]["id"].as_str().map(str::to_owned))
        }
        // The server never drops a request: a transport error is a failure of its own.
        Err(e) => panic!("the request failed without an answer: {e}"),
    }
}

/// Waits (bounded) until the poster has `n` posts acknowledged after `since`; returns how long
/// after `since` the first of them was.
async fn until_acknowledged_after(
    seen: &Mutex<Seen>,
    since: Instant,
    n: usize,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let acknowledged: Vec<Instant> =
            seen.lock().unwrap().answers.iter().filter(|a| a.0 == 201 && a.2 > since).map(|a| a.2).collect();
        if acknowledged.len() >= n {
            return acknowledged[0].duration_since(since);
        }
        assert!(started.elapsed() < within, "{n} posts were not acknowledged within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_or_stopped_database_gets_503s_only_and_nothing_acknowledged_is_lost() {
    let cluster = PrivateCluster::start().await;
    let mut config = serving(Config::new(cluster.url("parley")));
    config.pool_size = 10;
    let app = App::connect_with(&config, true, PasswordHasher::fast_insecure()).await.expect("app connects");
    let server = parley_api::http::Server::start(app, &config).await.expect("server starts");
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();

    let registered: Value = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"name": "Ann", "email": "ann@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["data"]["access_token"].as_str().unwrap().to_owned();
    let started: Value = http
        .post(format!("{base}/api/v1/conversations"))
        .bearer_auth(&token)
        .json(&json!({"kind": "group", "title": "Outage"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conversation = started["data"]["id"].as_str().unwrap().to_owned();
    let mut last_position = started["meta"]["position"].as_str().unwrap().to_owned();

    // A subscriber, from the conversation's start.
    let ws = format!("ws://{}/api/v1/cable?token={token}", server.addr);
    let mut cable = Cable { ws: tokio_tungstenite::connect_async(&ws).await.unwrap().0 };
    assert_eq!(cable.frame().await["type"], "welcome");
    cable.send(json!({"command": "subscribe", "channel": "conversation", "id": conversation, "after": last_position})).await;
    let delivered = Arc::new(Mutex::new(HashSet::<String>::new()));

    // Steady posting until told to stop.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (stop, stopped) = watch::channel(false);
    let poster = {
        let (http, seen, token) = (http.clone(), seen.clone(), token.clone());
        let url = format!("{base}/api/v1/conversations/{conversation}/messages");
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let stop = *stopped.borrow();
                if stop {
                    return;
                }
                n += 1;
                let sent = Instant::now();
                let (status, id) = post(&http, &url, &token, &format!("m{n}")).await;
                {
                    let mut seen = seen.lock().unwrap();
                    seen.answers.push((status, sent.elapsed(), Instant::now()));
                    seen.acknowledged.extend(id.filter(|_| status == 201));
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    // The subscriber reads what it can until the server or the outage closes it.
    let reader = {
        let delivered = delivered.clone();
        tokio::spawn(async move {
            let mut last = None;
            while let Ok(Some(Ok(frame))) =
                tokio::time::timeout(Duration::from_secs(3), futures::StreamExt::next(&mut cable.ws)).await
            {
                let Ok(frame) = serde_json::from_str::<Value>(frame.to_text().unwrap_or_default()) else {
                    continue;
                };
                if frame["type"] == "event" {
                    if let Some(id) = frame["event"]["data"]["message_id"].as_str() {
                        delivered.lock().unwrap().insert(id.to_owned());
                    }
                    last = frame["position"].as_str().map(str::to_owned);
                }
            }
            last
        })
    };

    let t0 = Instant::now();
    until_acknowledged_after(&seen, t0, 20, Duration::from_secs(20)).await;
    cluster.restart().await;
    let back = Instant::now();
    let resumed_after_restart = until_acknowledged_after(&seen, back, 20, Duration::from_secs(20)).await;
    cluster.down().await;
    let down = Instant::now();
    // While it is away: /ready says so within a second.
    let probe = Instant::now();
    let ready = http.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(probe.elapsed() < Duration::from_secs(1), "/ready took {:?}", probe.elapsed());
    // The outage lasts 5 s of the clock: that is what is being tested, not a wait for a worker.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(down.elapsed())).await;
    cluster.up().await;
    let up = Instant::now();
    let resumed = until_acknowledged_after(&seen, up, 20, Duration::from_secs(20)).await;
    let _ = stop.send(true);
    poster.await.unwrap();

    let seen = Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap();
    let statuses: HashSet<u16> = seen.answers.iter().map(|a| a.0).collect();
    assert!(statuses.iter().all(|s| [201, 503].contains(s)), "only 201 and 503: {statuses:?}");
    let unavailable: Vec<Duration> = seen.answers.iter().filter(|a| a.0 == 503).map(|a| a.1).collect();
    assert!(!unavailable.is_empty(), "the outage was seen");
    let slowest = unavailable.iter().max().unwrap();
    assert!(*slowest <= Duration::from_millis(2500), "503 answered within 2 s: slowest {slowest:?}");
    assert!(resumed <= Duration::from_secs(2), "posting resumed {resumed:?} after the database was back");
    assert!(resumed_after_restart <= Duration::from_secs(2), "{resumed_after_restart:?} after a restart");

    // The subscriber reconnects with its last position and gets every acknowledged message.
    if let Some(position) = reader.await.unwrap() {
        last_position = position;
    }
    let mut cable = Cable { ws: tokio_tungstenite::connect_async(&ws).await.unwrap().0 };
    assert_eq!(cable.frame().await["type"], "welcome");
    let subscribed = cable.subscribe("conversation", Some(&conversation), Some(&last_position)).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed:?}");
    let mut missing: HashSet<String> = seen.acknowledged.iter().cloned().collect();
    missing.retain(|id| !delivered.lock().unwrap().contains(id));
    while !missing.is_empty() {
        let frame = cable.events(1).await.remove(0);
        if let Some(id) = frame["event"]["data"]["message_id"].as_str() {
            missing.remove(id);
        }
    }
    assert!(seen.acknowledged.len() >= 60, "steady posting: {}", seen.acknowledged.len());

    server.stop().await;
    cluster.remove().await;
}
