//! `parley` with nothing configured: a private PostgreSQL cluster of its own, and the clear
//! refusals when it cannot have one.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::call;

/// A `parley` run with nothing configured but the private cluster: no DATABASE_URL, a data
/// folder of its own, a free port.
fn embedded(data_dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_parley"));
    command
        .arg("serve")
        .env_remove("DATABASE_URL")
        .env("PARLEY_EMBEDDED_POSTGRES", "true")
        .env("PARLEY_DATA_DIR", data_dir)
        .env("PARLEY_BIND", "127.0.0.1:0")
        .env("PARLEY_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

fn scratch_dir(purpose: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("parley-{purpose}-{}", uuid::Uuid::now_v7().simple()))
}

/// With PARLEY_EMBEDDED_POSTGRES and an empty data folder, `parley serve` creates and starts a
/// private cluster, serves (a user registers and posts), and on Ctrl-C exits 0 leaving no
/// PostgreSQL process of that cluster behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nothing_configured_serve_runs_on_a_private_cluster_and_stops_it_on_ctrl_c() {
    let data_dir = scratch_dir("embedded");
    let mut child = embedded(&data_dir).spawn().expect("parley starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    let addr = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            said.push(line.clone());
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if entry["message"] == "parley is listening" {
                return entry["addr"].as_str().unwrap().to_owned();
            }
        }
        panic!("parley exited before listening: {said:#?}");
    })
    .await
    .expect("parley listens within two minutes");
    assert!(
        said.iter().any(|l| l.contains("private PostgreSQL") && l.contains(&*data_dir.to_string_lossy())),
        "it says where the data is: {said:#?}"
    );
    let rest = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push(line);
        }
        rest
    });

    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http.get(format!("http://{addr}/ready")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "/ready never answered 200");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let register = serde_json::json!({
        "name": "Ann", "email": "ann@example.com", "password": "correct horse battery", "account_name": "Acme"
    });
    let (status, registered) = call(&http, &addr, "/auth/register", None, register).await;
    assert_eq!(status, 201, "{registered}");
    let token = registered["data"]["access_token"].as_str().unwrap().to_owned();
    let group = serde_json::json!({"kind": "group", "title": "General", "member_ids": []});
    let (status, conversation) = call(&http, &addr, "/conversations", Some(&token), group).await;
    assert_eq!(status, 201, "{conversation}");
    let messages = format!("/conversations/{}/messages", conversation["data"]["id"].as_str().unwrap());
    let (status, posted) =
        call(&http, &addr, &messages, Some(&token), serde_json::json!({"body": "hi"})).await;
    assert_eq!(status, 201, "{posted}");

    let postmaster: u32 = std::fs::read_to_string(data_dir.join("postgres/postmaster.pid"))
        .expect("the cluster runs")
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(std::path::Path::new(&format!("/proc/{postmaster}")).exists());
    let pid = child.id().unwrap();
    let interrupted = std::process::Command::new("kill").arg("-INT").arg(pid.to_string()).status().unwrap();
    assert!(interrupted.success());
    let exited =
        tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("it exits").unwrap();
    let rest = rest.await.unwrap();
    assert!(exited.success(), "exit {exited}: {rest:#?}");
    assert!(!data_dir.join("postgres/postmaster.pid").exists(), "the cluster was shut down cleanly");
    // `pg_ctl stop -w` returns once the pid file is gone, moments before the postmaster exits
    // and its parent (init, here) reaps it: gone, or a zombie, within seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{postmaster}/status")).unwrap_or_default();
        if status.is_empty() || status.lines().any(|l| l.starts_with("State:") && l.contains('Z')) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the postmaster still runs: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leftovers = std::process::Command::new("pgrep").arg("-f").arg(&data_dir).output().unwrap();
    assert!(leftovers.stdout.is_empty(), "{}", String::from_utf8_lossy(&leftovers.stdout));
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// A data folder that cannot be created (its parent is a file): a clear message, a non-zero
/// exit, nothing written.
#[tokio::test]
async fn an_unusable_data_folder_is_refused_with_a_clear_message() {
    let file = scratch_dir("not-a-dir");
    std::fs::write(&file, b"a file").unwrap();
    let data_dir = file.join("parley");
    let out = embedded(&data_dir).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("data folder") && stderr.contains(&*data_dir.to_string_lossy()), "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), b"a file");
    let _ = std::fs::remove_file(&file);
}

/// No PostgreSQL server programs: one line saying how to get them, a non-zero exit.
#[tokio::test]
async fn without_server_programs_it_says_how_to_get_them() {
    let data_dir = scratch_dir("no-binaries");
    let out = embedded(&data_dir).env("PARLEY_POSTGRES_BINDIR", "/nonexistent").output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("apt-get install postgresql") && stderr.contains("brew install postgresql"),
        "{stderr}"
    );
    assert!(!data_dir.exists(), "nothing written");
}
