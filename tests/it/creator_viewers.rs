//! Live viewer counts of streams, on real servers over real WebSockets: distinct users counted
//! once whatever their tabs, hosts not counted, the same count on every node within two seconds
//! of the last change and never below zero; `max_participants` enforced at join; the peak kept
//! into `StreamEnded`; a viewer whose grant expires loses the subscription (`access_ended`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{SinkExt, StreamExt};
use parley_api::config::Secret;
use parley_tests::server::{TestServer, User};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.auth_per_minute = 100_000;
        c.livekit_api_key = Some("APIviewers".into());
        c.livekit_api_secret = Some(Secret::new("a-livekit-secret-for-the-viewer-tests"));
    })
    .await
}

/// An owner with a live stream of a live-stream experience: (owner, experience, stream).
async fn live_stream(s: &TestServer, max_participants: Option<i32>) -> (User, String, String) {
    let owner = s.register("host@example.com").await;
    let spaces = s.get_at("/api/v1/spaces", &owner.token, &owner.position).await;
    let space = spaces.data()[0]["id"].as_str().unwrap().to_owned();
    let experience = s
        .post(
            &format!("/api/v1/spaces/{space}/experiences"),
            &owner.token,
            json!({"name": "Show", "experience_type": "live_stream", "price_cents": 0}),
        )
        .await;
    let experience = experience.data()["id"].as_str().unwrap().to_owned();
    let mut body = json!({"title": "Live", "starts_at": "2026-12-01T18:00:00Z"});
    if let Some(max) = max_participants {
        body["max_participants"] = json!(max);
    }
    let stream = s.post(&format!("/api/v1/experiences/{experience}/streams"), &owner.token, body).await;
    let stream = stream.data()["id"].as_str().unwrap().to_owned();
    let live = s.post(&format!("/api/v1/streams/{stream}/start"), &owner.token, json!({})).await;
    assert_eq!(live.status, 200, "{:?}", live.body);
    (owner, experience, stream)
}

/// A member of the owner's account with a grant to the experience (and its position).
async fn viewer(
    s: &TestServer,
    owner: &User,
    n: usize,
    experience: &str,
    expires_at: Option<String>,
) -> (User, String) {
    let user = s.invite_member(owner, &format!("viewer{n}@example.com")).await;
    let mut body = json!({"user_id": user.id, "experience_id": experience});
    if let Some(at) = expires_at {
        body["expires_at"] = json!(at);
    }
    let granted = s.post("/api/v1/access_grants", &owner.token, body).await;
    assert_eq!(granted.status, 201, "{:?}", granted.body);
    (user, granted.position())
}

/// One viewer's tab: subscribes to the stream's channel, keeps the last count it heard (and the
/// lowest), and closes when told.
struct Tab {
    close: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Heard {
    last: HashMap<usize, i64>,
    lowest: i64,
    ended: HashMap<usize, String>,
}

async fn open_tab(addr: &str, token: &str, stream: &str, n: usize, heard: Arc<Mutex<Heard>>) -> Tab {
    let url = format!("ws://{addr}/api/v1/cable?token={token}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("connects");
    let subscribe = json!({"command": "subscribe", "channel": "stream", "id": stream});
    ws.send(Message::Text(subscribe.to_string().into())).await.unwrap();
    // Until subscribed and told the first count.
    loop {
        let Some(Ok(Message::Text(text))) = ws.next().await else {
            panic!("tab {n} closed while subscribing")
        };
        let frame: Value = serde_json::from_str(text.as_str()).unwrap();
        match frame["type"].as_str() {
            Some("rejected") => panic!("tab {n} was refused: {frame}"),
            Some("viewer_update") => {
                record(&heard, n, &frame);
                break;
            }
            _ => {}
        }
    }
    let (close, mut closing) = oneshot::channel();
    let done = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut closing => {
                    let _ = ws.close(None).await;
                    return;
                }
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                        match frame["type"].as_str() {
                            Some("viewer_update") => record(&heard, n, &frame),
                            Some("unsubscribed") => {
                                let reason = frame["reason"].as_str().unwrap_or_default().to_owned();
                                heard.lock().unwrap().ended.insert(n, reason);
                            }
                            _ => {}
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
        }
    });
    Tab { close, done }
}

fn record(heard: &Mutex<Heard>, n: usize, frame: &Value) {
    let count = frame["count"].as_i64().expect("a count");
    let mut heard = heard.lock().unwrap();
    heard.lowest = heard.lowest.min(count);
    heard.last.insert(n, count);
}

/// Waits until every tab in `tabs` last heard `truth`; answers how long that took.
async fn converged(heard: &Mutex<Heard>, tabs: &[usize], truth: i64, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let wrong: Vec<(usize, Option<i64>)> = {
            let heard = heard.lock().unwrap();
            tabs.iter().map(|n| (*n, heard.last.get(n).copied())).filter(|(_, c)| *c != Some(truth)).collect()
        };
        if wrong.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{} tabs still off the truth ({truth}) after {within:?}: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tabs_on_two_servers_see_the_count_of_distinct_viewers_converge() {
    const USERS: usize = 100;
    const TABS: usize = 10;
    let s = server().await;
    let second = s.second_server(|_| {}).await;
    let (owner, experience, stream) = live_stream(&s, None).await;
    let mut viewers = Vec::new();
    for n in 0..USERS {
        viewers.push(viewer(&s, &owner, n, &experience, None).await.0);
    }
    let last_grant = s.t.head().await.to_string();
    // The grants are in the read model the subscriptions check.
    let listed = s.get_at("/api/v1/access_grants?per_page=1", &owner.token, &last_grant).await;
    assert_eq!(listed.body["meta"]["pagination"]["total"], USERS);
    let addrs = [s.base.trim_start_matches("http://").to_owned(), second.addr.to_string()];
    let heard = Arc::new(Mutex::new(Heard::default()));
    // The host watches too (told, not counted).
    let host = open_tab(&addrs[0], &owner.token, &stream, usize::MAX, heard.clone()).await;

    // Every user opens ten tabs, half on each node, fifty at a time.
    let mut tabs: HashMap<usize, Tab> = HashMap::new();
    let all: Vec<usize> = (0..USERS * TABS).collect();
    for batch in all.chunks(50) {
        let opened = futures::future::join_all(batch.iter().map(|&t| {
            let (user, addr, stream) = (&viewers[t / TABS], &addrs[t % 2], &stream);
            let heard = heard.clone();
            async move { (t, open_tab(addr, &user.token, stream, t, heard).await) }
        }))
        .await;
        tabs.extend(opened);
    }
    let mut watching: Vec<usize> = all.clone();
    watching.push(usize::MAX);
    let took = converged(&heard, &watching, USERS as i64, Duration::from_secs(2)).await;
    println!("{} tabs on 2 nodes agreed on {USERS} viewers {took:?} after the last subscribed", all.len());

    // Half the users close every tab: the count halves on every node.
    let leaving: Vec<usize> = all.iter().copied().filter(|t| t / TABS < USERS / 2).collect();
    for t in &leaving {
        let tab = tabs.remove(t).unwrap();
        let _ = tab.close.send(());
        let _ = tab.done.await;
    }
    watching.retain(|t| !leaving.contains(t));
    let took = converged(&heard, &watching, (USERS / 2) as i64, Duration::from_secs(2)).await;
    println!(
        "after {} tabs closed, {} agreed on {} viewers in {took:?}",
        leaving.len(),
        watching.len(),
        USERS / 2
    );

    // The others close one tab each: still the same users, the same count.
    let one_each: Vec<usize> =
        watching.iter().copied().filter(|t| *t != usize::MAX && t % TABS == 0).collect();
    for t in &one_each {
        let tab = tabs.remove(t).unwrap();
        let _ = tab.close.send(());
        let _ = tab.done.await;
    }
    watching.retain(|t| !one_each.contains(t));
    tokio::time::sleep(Duration::from_millis(1500)).await; // two ticks: a wrong count would have been sent
    converged(&heard, &watching, (USERS / 2) as i64, Duration::from_secs(2)).await;
    assert!(heard.lock().unwrap().lowest >= 0, "a count never goes below zero");
    let shown = s.get(&format!("/api/v1/streams/{stream}"), &owner.token).await;
    assert_eq!(shown.data()["viewer_count"], (USERS / 2) as i64, "{:?}", shown.body);

    // The stream ends carrying its peak.
    let ended = s.post(&format!("/api/v1/streams/{stream}/end"), &owner.token, json!({})).await;
    assert_eq!(ended.status, 200, "{:?}", ended.body);
    assert_eq!(ended.data()["peak_viewers"], USERS as i64);
    let _ = host.close.send(());
    for (_, tab) in tabs {
        let _ = tab.close.send(());
    }
    second.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_a_full_stream_is_refused_and_a_host_is_no_viewer() {
    let s = server().await;
    let (owner, experience, stream) = live_stream(&s, Some(1)).await;
    let (first, _) = viewer(&s, &owner, 1, &experience, None).await;
    let (second, _) = viewer(&s, &owner, 2, &experience, None).await;
    let join = |token: String, at: String| {
        let (s, path) = (&s, format!("/api/v1/streams/{stream}/join"));
        async move { s.call(Method::POST, &path, Some(&token), Some(json!({})), &[("x-min-position", &at)]).await }
    };
    let at = s.t.head().await.to_string();
    assert_eq!(join(first.token.clone(), at.clone()).await.status, 200);
    let heard = Arc::new(Mutex::new(Heard::default()));
    let addr = s.base.trim_start_matches("http://").to_owned();
    let host = open_tab(&addr, &owner.token, &stream, 0, heard.clone()).await;
    assert_eq!(heard.lock().unwrap().last[&0], 0, "the host is not counted");
    let tab = open_tab(&addr, &first.token, &stream, 1, heard.clone()).await;
    assert_eq!(heard.lock().unwrap().last[&1], 1);
    let full = join(second.token.clone(), at.clone()).await;
    full.assert_error(409, "conflict");
    assert_eq!(join(first.token.clone(), at.clone()).await.status, 200, "one who is in may join again");
    assert_eq!(join(owner.token.clone(), at).await.status, 200, "hosts are not viewers");
    let _ = (tab.close.send(()), host.close.send(()));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_whose_grant_expires_loses_the_stream_subscription() {
    let s = server().await;
    let (owner, experience, stream) = live_stream(&s, None).await;
    let expires_at = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (user, _) = viewer(&s, &owner, 1, &experience, Some(expires_at)).await;
    let (stays, _) = viewer(&s, &owner, 2, &experience, None).await;
    let _ = s.get_at("/api/v1/access_grants", &owner.token, &s.t.head().await.to_string()).await;
    let heard = Arc::new(Mutex::new(Heard::default()));
    let addr = s.base.trim_start_matches("http://").to_owned();
    let leaving = open_tab(&addr, &user.token, &stream, 1, heard.clone()).await;
    let staying = open_tab(&addr, &stays.token, &stream, 2, heard.clone()).await;
    converged(&heard, &[1, 2], 2, Duration::from_secs(2)).await;
    // Two hours later by the server's clock: the grant is over, before any job records it.
    s.t.app.store.use_clock(Arc::new(|| Utc::now() + chrono::Duration::hours(2)));
    let deadline = Instant::now() + Duration::from_secs(3);
    while !heard.lock().unwrap().ended.contains_key(&1) {
        assert!(Instant::now() < deadline, "the expired viewer's subscription never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(heard.lock().unwrap().ended[&1], "access_ended");
    converged(&heard, &[2], 1, Duration::from_secs(2)).await;
    let _ = (leaving.close.send(()), staying.close.send(()));
    s.stop().await;
}

/// `StreamChannel` with the real `@rails/actioncable` consumer: the viewer count as
/// `viewer_update`, and the stream's chat as `new_message`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rails_consumer_watches_a_stream_on_its_stream_channel() {
    use parley_tests::actioncable::CableClient;
    let s = server().await;
    let (owner, experience, stream) = live_stream(&s, None).await;
    let (fan, _) = viewer(&s, &owner, 1, &experience, None).await;
    let at = s.t.head().await.to_string();
    let shown = s.get_at(&format!("/api/v1/streams/{stream}"), &owner.token, &at).await;
    let chat = shown.data()["conversation_id"].as_str().unwrap().to_owned();
    let url = format!("{}/api/v1/cable?token={}", s.base.replace("http://", "ws://"), fan.token);
    let mut rails = CableClient::start(&url).await;
    rails.subscribe("stream", json!({"channel": "StreamChannel", "stream_id": stream})).await;
    assert_eq!(
        rails.until(|o| o["name"] == "stream" && o["event"] != "received").await["event"],
        "connected"
    );
    let counted = rails.received("stream", "viewer_update").await;
    assert_eq!(counted["count"], 1, "{counted}");
    let posted = s
        .post(
            &format!("/api/v1/conversations/{chat}/messages"),
            &owner.token,
            json!({"body": "welcome, all"}),
        )
        .await;
    assert_eq!(posted.status, 201, "{:?}", posted.body);
    let said = rails.received("stream", "new_message").await;
    assert_eq!(&said["message"], posted.data());
    // A second viewer arrives: the count follows.
    let (other, _) = viewer(&s, &owner, 2, &experience, None).await;
    let heard = Arc::new(Mutex::new(Heard::default()));
    let addr = s.base.trim_start_matches("http://").to_owned();
    let tab = open_tab(&addr, &other.token, &stream, 2, heard).await;
    // An update still saying 1 may come first (the count a second's tick saw before the join).
    loop {
        let counted = rails.received("stream", "viewer_update").await;
        if counted["count"] == 2 {
            break;
        }
        assert_eq!(counted["count"], 1, "the count only follows the viewers: {counted}");
    }
    let _ = tab.close.send(());
    s.stop().await;
}
