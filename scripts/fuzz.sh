#!/usr/bin/env bash
# Fuzzes every decoder of outside bytes for FUZZTIME each (default 20s).
# Finds the Fuzz* functions itself, so new fuzz tests are picked up.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-20s}
for dir in schema ingest gateway client writer catchup migrations e2e; do
  [ -d "$dir" ] || continue
  for pkg in $(cd "$dir" && go list ./...); do
    pkgdir=$(cd "$dir" && go list -f '{{.Dir}}' "$pkg")
    for fn in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$pkgdir"/*_test.go 2>/dev/null | sed 's/func //' | sort -u); do
      echo "== $pkg $fn ($FUZZTIME)"
      (cd "$pkgdir" && go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$FUZZTIME" .)
    done
  done
done
