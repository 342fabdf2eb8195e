//! A private PostgreSQL cluster for a first run with nothing configured (issue 16): `parley serve`
//! and `parley demo` start one from the machine's own server binaries in Parley's data folder,
//! listening only on a Unix socket in a private (mode 0700) directory, and stop it on exit.
//!
//! Why a cluster of our own rather than a bundled one: the machine's binaries are the ones its
//! package manager keeps patched, and a cluster in the data folder survives upgrades of Parley.
//! Why a Unix socket only: with no TCP listener and a socket directory only its owner can enter,
//! `--auth=trust` lets no one else in, so there is no password to generate, keep or print.

use std::fs;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// The port names the socket file (`.s.PGSQL.<port>`) only: nothing listens on TCP.
pub const PORT: u16 = 5432;
/// The database superuser `initdb -U` creates; the connection URL names it.
const SUPERUSER: &str = "postgres";
/// The OS account PostgreSQL runs as when Parley runs as root (PostgreSQL refuses root).
const SYSTEM_USER: &str = "postgres";
/// `sun_path` holds 108 bytes with its terminating NUL; PostgreSQL refuses longer socket paths.
const MAX_SOCKET_PATH: usize = 107;

/// Parley's data folder: `PARLEY_DATA_DIR` / `--data-dir`, else `$XDG_DATA_HOME/parley`, else
/// `$HOME/.local/share/parley`; for root, `/var/lib/parley`. PostgreSQL refuses to run as root, so
/// root's cluster runs as the `postgres` user, which cannot enter root's private home: a system
/// folder is where a service's data lives anyway.
pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    if is_root().unwrap_or(false) {
        return Ok(PathBuf::from("/var/lib/parley"));
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("parley"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("neither HOME nor XDG_DATA_HOME is set: name Parley's data folder with --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/parley"))
}

/// Whether something accepts TCP connections at `addr` within 300 ms: the default PostgreSQL
/// address is only replaced by a private cluster when nothing answers there.
pub async fn answers(addr: &str) -> bool {
    let connect = tokio::net::TcpStream::connect(addr);
    matches!(tokio::time::timeout(Duration::from_millis(300), connect).await, Ok(Ok(_)))
}

/// A PostgreSQL cluster in `<data dir>/postgres`, running until [`PrivateCluster::stop`] (or,
/// as a last resort, drop).
#[derive(Debug)]
pub struct PrivateCluster {
    bindir: PathBuf,
    cluster: PathBuf,
    socket_dir: PathBuf,
    /// A short socket directory under /tmp made for this run, removed at stop.
    temp_socket_dir: bool,
    log: PathBuf,
    as_system_user: bool,
    /// False when another process (another `parley`) started it: that one stops it.
    owned: bool,
    stopped: bool,
}

impl PrivateCluster {
    /// Starts the cluster in `data_dir` (creating it with `initdb` on the first run, reusing it
    /// afterwards; reusing it as it is when another process already runs it).
    pub async fn start(data_dir: &Path) -> anyhow::Result<Self> {
        let data_dir = data_dir.to_path_buf();
        tokio::task::spawn_blocking(move || Self::start_blocking(&data_dir))
            .await
            .context("the cluster's start was interrupted")?
    }

    fn start_blocking(data_dir: &Path) -> anyhow::Result<Self> {
        let cluster = data_dir.join("postgres");
        let existing = cluster.join("PG_VERSION").is_file();
        let bindir = find_bindir(existing_version(&cluster).as_deref())?;
        let as_system_user = is_root()?;
        if as_system_user {
            // Before anything is created: the nearest folder that exists decides.
            let existing = data_dir.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/"));
            check_system_user_reaches(existing, data_dir)?;
        }
        make_writable_dir(data_dir)?;
        let log = data_dir.join("postgres.log");
        let owner = data_dir.join("postgres.owner");
        if let Some((socket_dir, port)) = running_elsewhere(&bindir, &cluster, as_system_user)? {
            anyhow::ensure!(
                port == PORT,
                "the PostgreSQL cluster in {} runs on port {port}, not {PORT}",
                cluster.display()
            );
            // Another live parley stops it; a cluster whose parley was killed (kill -9) is
            // adopted, so it is stopped at our exit instead of running on forever.
            let owned = !owner_alive(&owner);
            if owned {
                fs::write(&owner, std::process::id().to_string())?;
            }
            return Ok(Self {
                bindir,
                cluster,
                temp_socket_dir: !socket_dir.starts_with(data_dir),
                socket_dir,
                log,
                as_system_user,
                owned,
                stopped: false,
            });
        }
        let (socket_dir, temp_socket_dir) = socket_dir_for(&cluster)?;
        // `stopped` until it is running, so a failed initdb does not try to stop anything.
        let mut this = Self {
            bindir,
            cluster,
            socket_dir,
            temp_socket_dir,
            log,
            as_system_user,
            owned: true,
            stopped: true,
        };
        if !existing {
            this.init()?;
        }
        if as_system_user {
            chown_to_system_user(&this.log, false)?;
            if temp_socket_dir {
                chown_to_system_user(&this.socket_dir, false)?;
            }
        }
        if let Err(e) = this.run_start() {
            // pg_ctl may have timed out with the server still starting: stop it, quietly (there
            // may be nothing to stop).
            this.stopped = false;
            let _ = this.stop_blocking();
            return Err(e);
        }
        this.stopped = false;
        fs::write(&owner, std::process::id().to_string())?;
        Ok(this)
    }

    /// The connection URL of its `parley` database, through the socket. The `localhost` is a
    /// placeholder the `host` parameter overrides: sqlx's URL parser refuses an empty host after
    /// a user name (`postgres://postgres@/parley` is "empty host").
    pub fn url(&self) -> String {
        format!(
            "postgres://{SUPERUSER}@localhost/parley?host={}&port={PORT}",
            query_escape(&self.socket_dir.to_string_lossy())
        )
    }

    /// Where the data is, that it is private and how to stop it: the one line said on stderr.
    pub fn describe(&self) -> String {
        let whose = if self.owned {
            "stops when parley exits (Ctrl-C)"
        } else {
            "is run by another parley process, which stops it"
        };
        let socket = if self.temp_socket_dir {
            format!(" (socket in {}: the data folder's path is too long for one)", self.socket_dir.display())
        } else {
            String::new()
        };
        format!(
            "parley: using a private PostgreSQL in {} (Unix socket only, no \
             TCP{socket}; log in {}); it {whose}",
            self.cluster.display(),
            self.log.display()
        )
    }

    /// Stops the cluster (`pg_ctl stop -m fast`: sessions are ended, nothing is lost) when this
    /// process started it.
    pub async fn stop(self) -> anyhow::Result<()> {
        tokio::task::spawn_blocking(move || {
            let mut this = self;
            this.stop_blocking()
        })
        .await
        .context("the cluster's stop was interrupted")?
    }

    fn stop_blocking(&mut self) -> anyhow::Result<()> {
        if self.stopped || !self.owned {
            self.stopped = true;
            return Ok(());
        }
        self.stopped = true;
        let result = self.pg(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-D".as_ref(),
                self.cluster.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
            ],
        );
        if self.temp_socket_dir {
            let _ = fs::remove_dir(&self.socket_dir);
        }
        result.context("cannot stop the private PostgreSQL cluster")
    }

    /// `initdb`: trust authentication is safe only because the socket directory is private and
    /// nothing listens on TCP; UTF-8 and the C locale so the cluster does not depend on the
    /// machine's locales.
    ///
    /// It runs in `postgres.initdb` next to the cluster's folder, renamed into place once
    /// complete: a run interrupted during initdb leaves no half-made cluster that the next run
    /// would take for a finished one.
    fn init(&self) -> anyhow::Result<()> {
        let building = self.cluster.with_extension("initdb");
        if building.exists() {
            fs::remove_dir_all(&building)
                .with_context(|| format!("cannot remove an unfinished cluster in {}", building.display()))?;
        }
        make_private_dir(&building)?;
        if self.as_system_user {
            chown_to_system_user(&building, false)?;
        }
        self.pg(
            "initdb",
            &[
                "-D".as_ref(),
                building.as_os_str(),
                "-U".as_ref(),
                SUPERUSER.as_ref(),
                "--auth=trust".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--locale=C".as_ref(),
            ],
        )
        .context("initdb failed")?;
        // Settings kept in the cluster, so a `pg_ctl start` by hand starts it the same way.
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(building.join("postgresql.conf"))
            .context("cannot write the cluster's postgresql.conf")?;
        writeln!(
            conf,
            "\n# parley: a private cluster, Unix socket only\nlisten_addresses = ''\nport = {PORT}"
        )?;
        fs::rename(&building, &self.cluster).with_context(|| {
            format!("cannot move the new cluster into {} (is something else there?)", self.cluster.display())
        })?;
        Ok(())
    }

    /// `pg_ctl start`, waiting until it accepts connections. The socket directory is given on
    /// each start: it is under /tmp (and new) when the data folder's path is too long.
    fn run_start(&self) -> anyhow::Result<()> {
        let options = format!(
            "-c listen_addresses='' -p {PORT} -k {}",
            shell_quote(&self.socket_dir.to_string_lossy())
        );
        self.pg(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-D".as_ref(),
                self.cluster.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-l".as_ref(),
                self.log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
            ],
        )
        .context("cannot start the private PostgreSQL cluster")
    }

    /// Runs one of the server's programs (as the `postgres` user when Parley runs as root),
    /// its output appended to the log so the terminal stays clean; on failure the error carries
    /// the log's tail.
    fn pg(&self, program: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot write {}", self.log.display()))?;
        let program = self.bindir.join(program);
        let mut command = if self.as_system_user {
            let mut c = Command::new("runuser");
            c.args(["-u", SYSTEM_USER, "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let status = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // The server's own directory, not wherever Parley was started (which the postgres
            // user may not be allowed to enter).
            .current_dir(self.cluster.parent().unwrap_or(Path::new("/")))
            .status()
            .with_context(|| format!("cannot run {}", program.display()))?;
        if !status.success() {
            bail!(
                "{} exited with {status}; the end of {}:\n{}",
                program.display(),
                self.log.display(),
                tail(&self.log)
            );
        }
        Ok(())
    }
}

impl Drop for PrivateCluster {
    /// The last resort when [`PrivateCluster::stop`] was not reached (an error, a panic): stop
    /// the cluster synchronously rather than leave a server running.
    fn drop(&mut self) {
        if !self.stopped {
            if let Err(e) = self.stop_blocking() {
                eprintln!("parley: {e:#}");
            }
        }
    }
}

/// Whether the parley process named in `postgres.owner` (the one that started the running
/// cluster) is still alive.
fn owner_alive(owner: &Path) -> bool {
    let Some(pid) = fs::read_to_string(owner).ok().and_then(|p| p.trim().parse::<u32>().ok()) else {
        return false;
    };
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    pid != std::process::id()
        && !status.is_empty()
        && !status.lines().any(|l| l.starts_with("State:") && l.contains('Z'))
}

/// The directory of the server's programs: `PARLEY_POSTGRES_BINDIR` (hidden, for tests), else
/// `/usr/lib/postgresql/<version>/bin` (the cluster's own version when it exists, else the
/// highest), else `pg_config --bindir`; it must hold `initdb` and `pg_ctl`.
pub fn find_bindir(cluster_version: Option<&str>) -> anyhow::Result<PathBuf> {
    let candidates: Vec<PathBuf> = if let Some(dir) = std::env::var_os("PARLEY_POSTGRES_BINDIR") {
        vec![PathBuf::from(dir)]
    } else {
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
            .collect();
        versions.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
        if let Some(version) = cluster_version.and_then(|v| v.parse::<u32>().ok()) {
            versions.sort_by_key(|(v, _)| *v != version);
        }
        let mut dirs: Vec<PathBuf> = versions.into_iter().map(|(_, dir)| dir).collect();
        if let Ok(out) = Command::new("pg_config").arg("--bindir").stderr(Stdio::null()).output() {
            if out.status.success() {
                dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
            }
        }
        dirs
    };
    candidates
        .into_iter()
        .find(|dir| ["initdb", "pg_ctl", "postgres"].iter().all(|p| dir.join(p).is_file()))
        .context(
            "no PostgreSQL server programs (initdb, pg_ctl) found to run a private cluster: install \
             them (`apt-get install postgresql` on Debian/Ubuntu, `brew install postgresql` on \
             macOS) or set DATABASE_URL",
        )
}

/// The major version of an existing cluster (its `PG_VERSION`), so the same version's programs
/// are preferred: a cluster cannot be started by another major version.
fn existing_version(cluster: &Path) -> Option<String> {
    fs::read_to_string(cluster.join("PG_VERSION")).ok().map(|v| v.trim().to_owned())
}

/// Creates the data folder if missing and checks it can be written, before anything is written.
fn make_writable_dir(dir: &Path) -> anyhow::Result<()> {
    let unusable = |e: std::io::Error| {
        anyhow::anyhow!(
            "Parley's data folder {} cannot be used ({e}): choose another with --data-dir or \
             PARLEY_DATA_DIR",
            dir.display()
        )
    };
    fs::create_dir_all(dir).map_err(unusable)?;
    let probe = dir.join(format!(".parley-write-test-{}", std::process::id()));
    fs::write(&probe, b"").map_err(unusable)?;
    fs::remove_file(&probe).map_err(unusable)?;
    Ok(())
}

/// A directory only its owner may enter (PostgreSQL requires it of its data directory).
fn make_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Whether this process runs as root: from `/proc/self/status` (its effective uid), since the
/// workspace forbids the `unsafe` a `geteuid` call needs; `id -u` where there is no /proc.
pub fn is_root() -> anyhow::Result<bool> {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            return Ok(line.split_whitespace().nth(2) == Some("0"));
        }
    }
    let out = Command::new("id").arg("-u").output().context("cannot tell which user runs parley")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// As root the cluster runs as the `postgres` user, who must be able to reach the data folder
/// (a private parent such as /root would stop it): checked on `existing`, the data folder or
/// its nearest existing parent (folders created under it are reachable: mode 0755 at the usual
/// umask).
fn check_system_user_reaches(existing: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let reaches = Command::new("runuser")
        .args(["-u", SYSTEM_USER, "--", "test", "-x"])
        .arg(existing)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| {
            format!("parley runs as root, so PostgreSQL must run as the `{SYSTEM_USER}` user, and runuser is missing")
        })?;
    anyhow::ensure!(
        reaches.success(),
        "parley runs as root, so its private PostgreSQL runs as the `{SYSTEM_USER}` user, who \
         cannot reach {} (a parent folder is private, or there is no `{SYSTEM_USER}` user): \
         choose a data folder it can reach, e.g. --data-dir /var/lib/parley",
        data_dir.display()
    );
    Ok(())
}

fn chown_to_system_user(path: &Path, recursive: bool) -> anyhow::Result<()> {
    let mut command = Command::new("chown");
    if recursive {
        command.arg("-R");
    }
    let status = command
        .arg(format!("{SYSTEM_USER}:"))
        .arg(path)
        .status()
        .with_context(|| format!("cannot give {} to the {SYSTEM_USER} user", path.display()))?;
    anyhow::ensure!(status.success(), "cannot give {} to the {SYSTEM_USER} user", path.display());
    Ok(())
}

/// When a cluster of ours already runs in `cluster` (another `parley` started it), its socket
/// directory and port, from `postmaster.pid`: it is reused as it is.
fn running_elsewhere(
    bindir: &Path,
    cluster: &Path,
    as_system_user: bool,
) -> anyhow::Result<Option<(PathBuf, u16)>> {
    let Ok(pid_file) = fs::read_to_string(cluster.join("postmaster.pid")) else {
        return Ok(None);
    };
    // `pg_ctl status` tells a live postmaster from a stale pid file left by a killed run (which
    // `pg_ctl start` then replaces).
    let program = bindir.join("pg_ctl");
    let mut command = if as_system_user {
        let mut c = Command::new("runuser");
        c.args(["-u", SYSTEM_USER, "--"]).arg(&program);
        c
    } else {
        Command::new(&program)
    };
    let status = command
        .arg("status")
        .arg("-D")
        .arg(cluster)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/")
        .status()
        .with_context(|| format!("cannot run {}", program.display()))?;
    if !status.success() {
        return Ok(None);
    }
    let lines: Vec<&str> = pid_file.lines().collect();
    let port = lines.get(3).and_then(|p| p.trim().parse().ok());
    let socket_dir = lines.get(4).map(|d| PathBuf::from(d.trim())).filter(|d| !d.as_os_str().is_empty());
    match (socket_dir, port) {
        (Some(dir), Some(port)) => Ok(Some((dir, port))),
        _ => bail!(
            "a PostgreSQL server already runs in {} without a Unix socket Parley can use: stop it \
             (pg_ctl stop -D {})",
            cluster.display(),
            cluster.display()
        ),
    }
}

/// The socket directory: the cluster's own (mode 0700) when `<dir>/.s.PGSQL.<port>` fits in a
/// socket address, else a new private directory under /tmp (true: remove it at stop).
fn socket_dir_for(cluster: &Path) -> anyhow::Result<(PathBuf, bool)> {
    let socket = cluster.join(format!(".s.PGSQL.{PORT}"));
    if socket.as_os_str().len() < MAX_SOCKET_PATH {
        return Ok((cluster.to_path_buf(), false));
    }
    let dir = std::env::temp_dir().join(format!("parley-pg-{}", uuid::Uuid::now_v7().simple()));
    // `create`, not `recursive`: it fails if the name is taken, so the directory is ours.
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create a socket directory {}", dir.display()))?;
    Ok((dir, true))
}

/// The last lines of the log, for an error.
fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// `value` as one word for the shell that `pg_ctl -o` hands its options to.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Percent-encodes what a URL query value cannot hold as it is.
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::postgres::PgConnectOptions;

    use super::*;

    #[test]
    fn the_url_names_the_socket_directory() {
        let cluster = PrivateCluster {
            bindir: PathBuf::new(),
            cluster: PathBuf::from("/data/my parley/postgres"),
            socket_dir: PathBuf::from("/data/my parley/postgres"),
            temp_socket_dir: false,
            log: PathBuf::new(),
            as_system_user: false,
            owned: false,
            stopped: true,
        };
        let options = PgConnectOptions::from_str(&cluster.url()).unwrap();
        assert_eq!(options.get_socket().map(PathBuf::as_path), Some(Path::new("/data/my parley/postgres")));
        assert_eq!(options.get_port(), PORT);
        assert_eq!(options.get_database(), Some("parley"));
        assert_eq!(options.get_username(), "postgres");
    }

    #[test]
    fn a_long_data_folder_gets_a_short_private_socket_directory() {
        let long = PathBuf::from(format!("/tmp/{}/postgres", "x".repeat(120)));
        let (dir, temporary) = socket_dir_for(&long).unwrap();
        assert!(temporary && dir.starts_with(std::env::temp_dir()));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        fs::remove_dir(&dir).unwrap();
        let (dir, temporary) = socket_dir_for(Path::new("/tmp/short/postgres")).unwrap();
        assert!(!temporary && dir == Path::new("/tmp/short/postgres"));
    }
}
