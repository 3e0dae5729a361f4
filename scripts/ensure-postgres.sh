#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries (initdb, pg_ctl, postgres) and clients (psql, pg_dump,
# pg_restore) are on this machine, and PostGIS and pg_cron for that server (the test suite masks and
# audits geometry columns, and keeps production's scheduled jobs out of staging); installs what is
# missing with apt-get where it can, otherwise says how.
set -euo pipefail

server_dir() {
  local dir
  if command -v pg_config >/dev/null 2>&1; then
    dir=$(pg_config --bindir 2>/dev/null || true)
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && { echo "$dir"; return 0; }
  fi
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"; return 0
  fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin /usr/pgsql-*/bin /opt/homebrew/opt/postgresql*/bin 2>/dev/null | sort -rV); do
    [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && { echo "$dir"; return 0; }
  done
  return 1
}

have_clients() {
  command -v psql >/dev/null 2>&1 && command -v pg_dump >/dev/null 2>&1 && command -v pg_restore >/dev/null 2>&1
}

major_version() {  # of the server in folder $1: "postgres (PostgreSQL) 15.18 ..." -> 15
  "$1/postgres" --version | sed -E 's/^[^0-9]*([0-9]+).*/\1/'
}

have_extension() {  # $2 for the server in folder $1
  local share
  share=$("$1/pg_config" --sharedir 2>/dev/null || echo "/usr/share/postgresql/$(major_version "$1")")
  [ -f "$share/extension/$2.control" ] || [ -f "/usr/share/postgresql/$(major_version "$1")/extension/$2.control" ]
}

apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "run as root: apt-get install $*" >&2; return 1; }
    sudo="sudo"
  fi
  echo "installing $* (apt-get)..."
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 || {
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  }
}

if ! server_dir >/dev/null || ! have_clients; then
  apt_install postgresql || true
fi
if ! dir=$(server_dir) || ! have_clients; then
  echo "PostgreSQL server binaries not found. Install PostgreSQL 13 or newer" \
       "(Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql)" >&2
  exit 1
fi

ensure_extension() {  # $1: extension, $2: its Debian package, $3: its Homebrew formula
  have_extension "$dir" "$1" && return 0
  apt_install "$2" || true
  if ! have_extension "$dir" "$1"; then
    # Only the tests need it (make demo does not): they fail naming it.
    echo "warning: $1 for PostgreSQL $(major_version "$dir") not found; the tests need it" \
         "(Debian/Ubuntu: apt-get install $2; macOS: brew install $3)" >&2
  fi
}

ensure_extension postgis "postgresql-$(major_version "$dir")-postgis-3" postgis
ensure_extension pg_cron "postgresql-$(major_version "$dir")-cron" pg_cron
