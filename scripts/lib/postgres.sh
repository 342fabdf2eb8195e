# Shared by scripts/test and scripts/run: make sure a PostgreSQL server answers at DATABASE_URL,
# starting the local cluster, or installing Debian's `postgresql` package, when it does not.
# Never prompts: psql runs with -w (no password prompt), and loopback is trusted before anything
# polls the server over TCP.

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
  else log "root is needed to run: $*"; return 1
  fi
}

# The server is probed through PG_PROBE_URL (default DATABASE_URL): a database that does not exist
# yet (Parley creates its own) must not read as a server that does not answer.
pg_answers() {
  if command -v psql >/dev/null 2>&1; then
    psql -w "${PG_PROBE_URL:-$DATABASE_URL}" -Atqc 'SELECT 1' >/dev/null 2>&1 </dev/null
  else
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
  fi
}

wait_until_ready() {
  for _ in $(seq 1 60); do
    pg_answers && return 0
    sleep 0.5
  done
  return 1
}

first_cluster() {
  pg_lsclusters --no-header 2>/dev/null | awk 'NR == 1 {print $1 " " $2}'
}

# Parley connects as `postgres` over TCP without a password, as on CI's server: trust that user's
# loopback connections (only that user's, only from this machine).
trust_loopback() {
  local hba
  hba=$(ls /etc/postgresql/*/main/pg_hba.conf 2>/dev/null | head -n 1 || true)
  [ -n "$hba" ] || return 0
  if ! grep -qE '^host[[:space:]]+all[[:space:]]+(all|postgres)[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
    log "trusting the postgres user's loopback connections in $hba"
    as_root sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
    local cluster
    cluster=$(first_cluster)
    # shellcheck disable=SC2086
    [ -z "$cluster" ] || as_root pg_ctlcluster --skip-systemctl-redirect $cluster reload 2>/dev/null || true
  fi
}

start_local_cluster() {
  local cluster
  cluster=$(first_cluster)
  [ -n "$cluster" ] || return 1
  log "starting the local PostgreSQL cluster ($cluster)"
  # shellcheck disable=SC2086
  as_root pg_ctlcluster --skip-systemctl-redirect $cluster start 2>/dev/null || true
}

install_postgres() {
  log "installing PostgreSQL from Debian's packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
}

ensure_postgres() {
  pg_answers && return 0
  command -v pg_lsclusters >/dev/null 2>&1 || install_postgres
  trust_loopback
  start_local_cluster || true
  wait_until_ready && return 0
  log "PostgreSQL does not answer at ${PG_PROBE_URL:-$DATABASE_URL}"
  exit 1
}
