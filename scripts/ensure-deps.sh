#!/usr/bin/env bash
# Installs what `make dev` and `make test` need and the machine lacks:
# PostgreSQL 15 server binaries (Debian package postgresql-15) and the Go
# modules of every workspace module. Safe to run repeatedly.
set -euo pipefail

have_pg() {
  command -v initdb >/dev/null 2>&1 && initdb --version | grep -q ' 15\.' && return 0
  [ -x /usr/lib/postgresql/15/bin/initdb ] && return 0
  return 1
}

if ! have_pg; then
  echo "ensure-deps: PostgreSQL 15 not found; installing postgresql-15" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y postgresql-15 postgresql-client-15
fi

if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then export PATH=/usr/local/go/bin:$PATH; else
    echo "ensure-deps: Go is required (https://go.dev/dl); not found on PATH or in /usr/local/go" >&2
    exit 1
  fi
fi

# Go modules are fetched from the module proxy by the go command itself.
