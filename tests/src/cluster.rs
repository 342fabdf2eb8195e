//! A private PostgreSQL cluster a test can restart and stop: started from the machine's server
//! binaries (`/usr/lib/postgresql/<version>/bin`), in a folder of its own, on a free TCP port of
//! loopback. The server refuses to run as root, so as root it runs as the `postgres` user.

use std::path::PathBuf;
use std::process::Output;

use tokio::process::Command;

pub struct PrivateCluster {
    /// Its folder: `data/`, the Unix socket and the log. Short, for the socket's 107-byte limit.
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
    /// Server settings beyond the defaults (`-c name=value ...`).
    settings: String,
}

impl PrivateCluster {
    /// Initialises and starts a cluster, trusting local connections.
    pub async fn start() -> Self {
        let bin = newest_server_binaries().expect("PostgreSQL server binaries under /usr/lib/postgresql");
        let as_postgres = is_root();
        let dir = fresh_dir(as_postgres).await;
        let cluster = Self { dir, bin, port: free_port(), as_postgres, settings: String::new() };
        let data = cluster.data();
        cluster
            .run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .await;
        cluster.up().await;
        cluster
    }

    /// A hot standby of `primary`: a `pg_basebackup` of it (which writes `standby.signal` and the
    /// connection to the primary), streaming from it, started with `settings` on a port of its own.
    pub async fn standby_of(primary: &PrivateCluster, settings: &str) -> Self {
        let dir = fresh_dir(primary.as_postgres).await;
        let cluster = Self {
            dir,
            bin: primary.bin.clone(),
            port: free_port(),
            as_postgres: primary.as_postgres,
            settings: settings.to_owned(),
        };
        let (data, port) = (cluster.data(), primary.port.to_string());
        cluster
            .run(
                "pg_basebackup",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    "postgres",
                    "-D",
                    &data,
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "--no-sync",
                ],
            )
            .await;
        cluster.up().await;
        cluster
    }

    /// Runs `sql` with `psql` on database `parley` (for what the server refuses over a pool, or
    /// to keep tests' SQL apart from the server's connections), returning its unaligned output.
    pub async fn psql(&self, sql: &str) -> String {
        let port = self.port.to_string();
        let output = self
            .run("psql", &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", "parley", "-XAtc", sql])
            .await;
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub async fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 {}",
            self.port,
            self.dir.display(),
            self.settings
        );
        let log = self.dir.join("log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "-t", "60", "start"])
            .await;
    }

    /// `pg_ctl restart -m fast`: every connection is terminated, the server comes back.
    pub async fn restart(&self) {
        // With its log file: a server left writing to our pipe would keep `output()` waiting.
        let log = self.dir.join("log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-m", "fast", "-w", "-t", "60", "restart"])
            .await;
    }

    /// `pg_ctl stop -m fast`.
    pub async fn down(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "-t", "60", "stop"]).await;
    }

    async fn run(&self, program: &str, args: &[&str]) -> Output {
        let path = self.bin.join(program);
        let output = if self.as_postgres {
            Command::new("runuser").arg("-u").arg("postgres").arg("--").arg(&path).args(args).output().await
        } else {
            Command::new(&path).args(args).output().await
        }
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Stops the server and removes its folder.
    pub async fn remove(self) {
        let data = self.data();
        let stop = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let path = self.bin.join("pg_ctl");
        let _ = if self.as_postgres {
            Command::new("runuser").arg("-u").arg("postgres").arg("--").arg(&path).args(stop).output().await
        } else {
            Command::new(&path).args(stop).output().await
        };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A new folder for a cluster, the `postgres` user's when `as_postgres`.
async fn fresh_dir(as_postgres: bool) -> PathBuf {
    let dir = PathBuf::from(format!("/tmp/pg-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]));
    std::fs::create_dir_all(&dir).expect("cluster folder");
    if as_postgres {
        let chown = Command::new("chown").arg("-R").arg("postgres:postgres").arg(&dir).output().await;
        assert!(chown.is_ok_and(|o| o.status.success()), "chown the cluster folder to postgres");
    }
    dir
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// `/usr/lib/postgresql/<version>/bin` of the newest installed version.
fn newest_server_binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}
