//! What the machine offers and allows a private cluster: the server's programs, the data
//! folder and its owner, a cluster already running there, a socket path that fits.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use super::{MAX_SOCKET_PATH, PORT, SYSTEM_USER};

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
pub(super) fn existing_version(cluster: &Path) -> Option<String> {
    fs::read_to_string(cluster.join("PG_VERSION")).ok().map(|v| v.trim().to_owned())
}

/// Creates the data folder if missing and checks it can be written, before anything is written.
pub(super) fn make_writable_dir(dir: &Path) -> anyhow::Result<()> {
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
pub(super) fn make_private_dir(dir: &Path) -> anyhow::Result<()> {
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
pub(super) fn check_system_user_reaches(existing: &Path, data_dir: &Path) -> anyhow::Result<()> {
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

pub(super) fn chown_to_system_user(path: &Path, recursive: bool) -> anyhow::Result<()> {
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
pub(super) fn running_elsewhere(
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
pub(super) fn socket_dir_for(cluster: &Path) -> anyhow::Result<(PathBuf, bool)> {
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

/// Whether the parley process named in `postgres.owner` (the one that started the running
/// cluster) is still alive.
pub(super) fn owner_alive(owner: &Path) -> bool {
    let Some(pid) = fs::read_to_string(owner).ok().and_then(|p| p.trim().parse::<u32>().ok()) else {
        return false;
    };
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    pid != std::process::id()
        && !status.is_empty()
        && !status.lines().any(|l| l.starts_with("State:") && l.contains('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;

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
