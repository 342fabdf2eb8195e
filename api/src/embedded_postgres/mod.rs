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
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

mod host;

use host::{
    check_system_user_reaches, chown_to_system_user, existing_version, make_private_dir, make_writable_dir,
    owner_alive, running_elsewhere, socket_dir_for,
};
pub use host::{find_bindir, is_root};

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
}
