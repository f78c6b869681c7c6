#!/usr/bin/env bash
# Install the system packages the test suite needs, and only those missing:
#   - PostgreSQL server binaries (initdb, pg_ctl, postgres under /usr/lib/postgresql/*/bin),
#     from Debian's `postgresql` package; the tests start their own private servers.
#   - Node.js (`nodejs`) when there is no `node` on PATH.
#   - Docker (`docker.io`: dockerd, containerd, runc) and `debootstrap`, for the container
#     target, the docker work pool and the runner image (built from a debootstrap root
#     filesystem, no registry). No daemon is started here: the tests start their own dockerd.
#   - OpenSSH's server binary (/usr/sbin/sshd, Debian's `openssh-server`) and `ssh-keygen`;
#     the SSH tests start their own private sshd instances on 127.0.0.1 ports.
#   - Redis (`redis-server`): shared rate limits across API processes; tests start their own.
#   - `docker-compose` (Debian's): `docker-compose config` checks infra/compose.yaml.
# Idempotent: when everything is present it installs nothing and runs no apt-get update.
# It never starts a service: the install neither creates nor starts Debian's "main"
# cluster, and any postmaster the install did start anyway is stopped by its PID.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

log() { echo "system-deps: $*" >&2; }

# Highest-version Debian PostgreSQL bin dir holding all three server binaries, or nothing.
pg_bindir() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
      echo "$dir"
    fi
  done | sort -V | tail -n 1
}

# PIDs of running postmasters, read from their pid files (never looked up by name).
postmaster_pids() {
  local file pid
  for file in /var/lib/postgresql/*/*/postmaster.pid /run/postgresql/*.pid; do
    [ -f "$file" ] || continue
    pid=$(head -n 1 "$file" 2>/dev/null || true)
    case "$pid" in '' | *[!0-9]*) continue ;; esac
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = postgres ]; then
      echo "$pid"
    fi
  done | sort -u
}

stop_pid() {
  local pid=$1 i
  log "stopping PostgreSQL postmaster $pid started by the package install"
  kill -INT "$pid" 2>/dev/null || return 0 # fast shutdown
  for i in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || return 0
    [ "$i" -eq 150 ] && kill -QUIT "$pid" 2>/dev/null # immediate shutdown after 15s
    sleep 0.1
  done
  log "postmaster $pid did not stop"
  return 1
}

packages=()
[ -n "$(pg_bindir)" ] || packages+=(postgresql)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v dockerd >/dev/null 2>&1 || packages+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || packages+=(debootstrap)
[ -x /usr/sbin/sshd ] && command -v ssh-keygen >/dev/null 2>&1 || packages+=(openssh-server)
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
command -v docker-compose >/dev/null 2>&1 || packages+=(docker-compose)  # checks infra/compose.yaml

if [ "${#packages[@]}" -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    exec sudo -n bash "$0" "$@"
  fi
  log "need root to install: ${packages[*]} (run as root or with passwordless sudo)"
  exit 1
fi

log "installing: ${packages[*]}"

cleanup=()
on_exit() {
  local path
  for path in "${cleanup[@]}"; do rm -f "$path"; done
  [ -z "${apt_log:-}" ] || rm -f "$apt_log"
}
trap on_exit EXIT

# 1. Debian's postgresql-NN postinst creates a "main" cluster unless told not to.
no_cluster=/etc/postgresql-common/createcluster.d/zz-flowforge-no-main-cluster.conf
if [[ " ${packages[*]} " == *" postgresql "* ]] && [ ! -e "$no_cluster" ]; then
  mkdir -p "$(dirname "$no_cluster")"
  echo "create_main_cluster = false" >"$no_cluster"
  cleanup+=("$no_cluster")
fi
# 2. invoke-rc.d / deb-systemd-invoke start nothing while policy-rc.d exits 101.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\n# temporary, from FlowForge scripts/system-deps.sh\nexit 101\n' \
    >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  cleanup+=(/usr/sbin/policy-rc.d)
fi
before=" $(postmaster_pids | tr '\n' ' ') "

apt_log=$(mktemp)
apt_opts=(-y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef
  -o Dpkg::Options::=--force-confold --no-install-recommends)
if ! { apt-get update -q && apt-get install "${apt_opts[@]}" "${packages[@]}"; } \
  >"$apt_log" 2>&1; then
  tail -n 60 "$apt_log" >&2
  log "apt-get failed installing: ${packages[*]}"
  exit 1
fi

# 3. Whatever still got started by the install is stopped by its PID.
for pid in $(postmaster_pids); do
  [[ "$before" == *" $pid "* ]] || stop_pid "$pid"
done

missing=()
[ -n "$(pg_bindir)" ] || missing+=("PostgreSQL initdb/pg_ctl/postgres under /usr/lib/postgresql/*/bin")
command -v node >/dev/null 2>&1 || missing+=(node)
command -v dockerd >/dev/null 2>&1 || missing+=(dockerd)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
[ -x /usr/sbin/sshd ] || missing+=(/usr/sbin/sshd)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if [ "${#missing[@]}" -gt 0 ]; then
  log "still missing after install: ${missing[*]}"
  exit 1
fi
log "installed: ${packages[*]} (PostgreSQL binaries in $(pg_bindir))"
