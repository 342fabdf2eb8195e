//! A first run with nothing configured: seconds from spawning `parley serve --embedded-postgres`
//! on an EMPTY data folder to `/ready` answering 200 (initdb, start, create and migrate the
//! database, serve), and on the same folder again (the second start); next to the limits
//! measured in the same run: `initdb` + `pg_ctl start` run directly (the floor of a first run)
//! and `pg_ctl start` alone (the floor of a second).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use parley_api::embedded_postgres;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const RUNS: usize = 3;

pub async fn run() -> anyhow::Result<()> {
    let parley = std::env::current_exe()?.with_file_name("parley");
    anyhow::ensure!(
        parley.is_file(),
        "{} is missing: build it next to the bench (cargo build --release -p parley-api)",
        parley.display()
    );
    let bindir = embedded_postgres::find_bindir(None)?;
    let as_postgres = embedded_postgres::is_root()?;
    println!("first run: `parley serve --embedded-postgres` to /ready = 200, {RUNS} runs each (median)");
    let (mut first, mut second, mut floor_first, mut floor_second) = (vec![], vec![], vec![], vec![]);
    for _ in 0..RUNS {
        let dir = scratch("first-run");
        first.push(serve_until_ready(&parley, &dir).await?);
        second.push(serve_until_ready(&parley, &dir).await?);
        let _ = std::fs::remove_dir_all(&dir);

        let dir = scratch("first-run-floor");
        let (init, start) = floor(&bindir, &dir, as_postgres).await?;
        floor_first.push(init + start);
        floor_second.push(start_alone(&bindir, &dir, as_postgres).await?);
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!("  {:<40} {:>10} {:>10} {:>8}", "", "parley", "limit", "ratio");
    for (what, ours, limit) in [
        ("empty data folder (initdb + start)", &mut first, &mut floor_first),
        ("existing data folder (start)", &mut second, &mut floor_second),
    ] {
        let (ours, limit) = (median(ours), median(limit));
        println!("  {what:<40} {ours:>9.2}s {limit:>9.2}s {:>7.1}x", ours / limit);
    }
    Ok(())
}

fn scratch(purpose: &str) -> PathBuf {
    std::env::temp_dir().join(format!("parley-bench-{purpose}-{}", uuid::Uuid::now_v7().simple()))
}

/// Seconds from spawn to `/ready` = 200; then Ctrl-C, and the process's exit (which stops the
/// cluster) is waited for.
async fn serve_until_ready(parley: &Path, data_dir: &Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut child = Command::new(parley)
        .args(["serve", "--embedded-postgres"])
        .env_remove("DATABASE_URL")
        .env("PARLEY_DATA_DIR", data_dir)
        .env("PARLEY_BIND", "127.0.0.1:0")
        .env("PARLEY_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stderr.take().context("no stderr")?).lines();
    let addr = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await? {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if entry["message"] == "parley is listening" {
                return Ok(entry["addr"].as_str().unwrap_or_default().to_owned());
            }
        }
        anyhow::bail!("parley exited before listening")
    })
    .await??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(answer) = http.get(format!("http://{addr}/ready")).send().await {
            if answer.status() == 200 {
                break;
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "/ready never answered 200");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let pid = child.id().context("parley exited")?;
    std::process::Command::new("kill").arg("-INT").arg(pid.to_string()).status()?;
    let exited = tokio::time::timeout(Duration::from_secs(60), child.wait()).await??;
    anyhow::ensure!(exited.success(), "parley exited with {exited}");
    Ok(elapsed)
}

/// `initdb` and `pg_ctl start` as Parley runs them, directly: seconds of each.
async fn floor(bindir: &Path, dir: &Path, as_postgres: bool) -> anyhow::Result<(f64, f64)> {
    let cluster = dir.join("postgres");
    std::fs::create_dir_all(dir)?;
    if as_postgres {
        std::process::Command::new("chown").arg("postgres:").arg(dir).status()?;
    }
    let started = Instant::now();
    pg(
        bindir,
        as_postgres,
        "initdb",
        &[
            "-D",
            &cluster.to_string_lossy(),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ],
    )
    .await?;
    let init = started.elapsed().as_secs_f64();
    let start = start_alone(bindir, dir, as_postgres).await?;
    Ok((init, start))
}

/// `pg_ctl start -w` on the cluster in `dir` (Unix socket only), timed, then stopped.
async fn start_alone(bindir: &Path, dir: &Path, as_postgres: bool) -> anyhow::Result<f64> {
    let cluster = dir.join("postgres").to_string_lossy().into_owned();
    let options = format!("-c listen_addresses='' -p 5432 -k '{cluster}'");
    let log = dir.join("postgres.log").to_string_lossy().into_owned();
    let started = Instant::now();
    pg(bindir, as_postgres, "pg_ctl", &["start", "-D", &cluster, "-w", "-l", &log, "-o", &options]).await?;
    let elapsed = started.elapsed().as_secs_f64();
    pg(bindir, as_postgres, "pg_ctl", &["stop", "-D", &cluster, "-m", "fast", "-w"]).await?;
    Ok(elapsed)
}

async fn pg(bindir: &Path, as_postgres: bool, program: &str, args: &[&str]) -> anyhow::Result<()> {
    let program = bindir.join(program);
    let mut command = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&program);
        c
    } else {
        Command::new(&program)
    };
    let out = command.args(args).current_dir("/").stdin(Stdio::null()).output().await?;
    anyhow::ensure!(
        out.status.success(),
        "{} failed: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
