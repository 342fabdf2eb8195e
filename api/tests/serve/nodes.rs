//! Several `parley serve` nodes on one database.

use std::time::Duration;

use super::{call, Served};

/// Three `parley serve` processes and an API-only one (`--no-workers`) on one database, clients
/// spread over them: every subscriber, whatever its node, receives the same events in the same
/// order; a node is killed (`kill -9`) mid-run; the others keep accepting posts, the projections
/// are taken over by a surviving node (a read waiting for the last post's position answers within
/// its 5 s), and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_and_an_api_only_one_agree_on_every_event_and_survive_a_kill() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    const EACH_PHASE: usize = 30;
    let env = [("PARLEY_JWT_SECRET", "nodes-test-secret"), ("PARLEY_AUTH_RATE_PER_MINUTE", "100000")];
    let mut a = Served::start(&env).await;
    let b = Served::start_on(&a.database, &env).await;
    let c = Served::start_on(&a.database, &env).await;
    let api_only = Served::start_with_args(&a.database, &env, &["--no-workers"]).await;
    let http = reqwest::Client::new();
    let register = serde_json::json!({
        "name": "Ann", "email": "ann@example.com", "password": "correct horse battery", "account_name": "Acme"
    });
    let (status, ann) = call(&http, &b.addr, "/auth/register", None, register).await;
    assert_eq!(status, 201, "{ann}");
    let token = ann["data"]["access_token"].as_str().unwrap().to_owned();
    let group = serde_json::json!({"kind": "group", "title": "Nodes", "member_ids": []});
    let (status, group) = call(&http, &b.addr, "/conversations", Some(&token), group).await;
    assert_eq!(status, 201, "{group}");
    let conversation = group["data"]["id"].as_str().unwrap().to_owned();

    // A subscriber on every node, from the conversation's start.
    let mut subscribers = Vec::new();
    for (name, addr) in [("a", &a.addr), ("b", &b.addr), ("c", &c.addr), ("api", &api_only.addr)] {
        let url = format!("ws://{addr}/api/v1/cable?token={token}");
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("connects");
        let subscribe = serde_json::json!({"command": "subscribe", "channel": "conversation", "id": conversation, "after": "0"});
        ws.send(Message::Text(subscribe.to_string().into())).await.unwrap();
        let want = if name == "a" { EACH_PHASE } else { 2 * EACH_PHASE };
        subscribers.push((
            name,
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                while seen.len() < want {
                    let Ok(Some(Ok(Message::Text(text)))) =
                        tokio::time::timeout_at(deadline, ws.next()).await
                    else {
                        break;
                    };
                    let frame: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                    if frame["type"] == "event" && frame["event"]["event_type"] == "MessagePosted" {
                        seen.push(frame["event"]["data"]["message_id"].as_str().unwrap().to_owned());
                    }
                }
                seen
            }),
        ));
    }

    let post = |addr: String, n: usize| {
        let (http, token, conversation) = (http.clone(), token.clone(), conversation.clone());
        async move {
            let body = serde_json::json!({"body": format!("message {n}")});
            let path = format!("/conversations/{conversation}/messages");
            let (status, answer) = call(&http, &addr, &path, Some(&token), body).await;
            assert_eq!(status, 201, "post {n} on {addr}: {answer}");
            (
                answer["data"]["id"].as_str().unwrap().to_owned(),
                answer["meta"]["position"].as_str().unwrap().to_owned(),
            )
        }
    };
    let mut acknowledged = Vec::new();
    let everyone = [a.addr.clone(), b.addr.clone(), c.addr.clone(), api_only.addr.clone()];
    for n in 0..EACH_PHASE {
        acknowledged.push(post(everyone[n % 4].clone(), n).await);
    }
    // The first node dies (it started first: it most likely holds the projections' leases).
    let pid = a.child.id().unwrap();
    assert!(std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status().unwrap().success());
    let _ = a.child.wait().await;
    let survivors = [b.addr.clone(), c.addr.clone(), api_only.addr.clone()];
    for n in EACH_PHASE..2 * EACH_PHASE {
        acknowledged.push(post(survivors[n % 3].clone(), n).await);
    }

    // The read side followed: a read waiting for the last post answers (it waits at most 5 s).
    let last = acknowledged.last().unwrap().1.clone();
    let started = std::time::Instant::now();
    let read = http
        .get(format!("http://{}/api/v1/conversations/{conversation}/messages?limit=100", api_only.addr))
        .bearer_auth(&token)
        .header("x-min-position", &last)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "the projections were taken over within the read's 5 s");
    println!("the read side had the last post {:?} after it was answered", started.elapsed());
    let listed: serde_json::Value = read.json().await.unwrap();
    let mut ids: Vec<String> =
        listed["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    ids.reverse();
    let acknowledged_ids: Vec<String> = acknowledged.iter().map(|(id, _)| id.clone()).collect();
    let mut sorted = acknowledged_ids.clone();
    sorted.sort();
    let mut listed_sorted = ids.clone();
    listed_sorted.sort();
    assert_eq!(listed_sorted, sorted, "nothing acknowledged was lost");

    // Every surviving subscriber got every post, in one and the same order; the killed node's got
    // the first phase in that order too.
    let mut orders = Vec::new();
    for (name, task) in subscribers {
        let seen = task.await.unwrap();
        orders.push((name, seen));
    }
    let reference = orders.iter().find(|(n, _)| *n == "b").unwrap().1.clone();
    assert_eq!(reference.len(), 2 * EACH_PHASE, "node b's subscriber got every post");
    let mut in_order = reference.clone();
    in_order.sort();
    assert_eq!(in_order, sorted);
    for (name, seen) in &orders {
        if *name == "a" {
            assert_eq!(seen[..], reference[..seen.len()], "the killed node's subscriber, until it died");
        } else {
            assert_eq!(seen, &reference, "subscriber on {name}: the same events in the same order");
        }
    }
    let _ = (c.child.id(), api_only.child.id());
    api_only.stop().await;
    c.stop().await;
    b.stop().await;
}
