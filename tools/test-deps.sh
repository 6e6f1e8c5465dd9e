#!/usr/bin/env bash
# The components `make test` needs beyond Go, found or installed in one place, for both
# `make test` and CI (.ci/run):
#   - PostgreSQL: a server (TEST_DATABASE_URL, or one on 127.0.0.1:5432), or its initdb/pg_ctl
#     so the tests can start a throw-away cluster (internal/pgcluster);
#   - pgbouncer: the store and cmd tests start their own, in transaction mode;
#   - promtool (Debian's prometheus package, /usr/bin/promtool): the deploy tests check the alert
#     rules (promtool check rules, test rules) and a real run's /metrics (promtool check metrics).
#     The package also ships a Prometheus server, which is never started here (see below).
#
# What is missing is installed with apt-get when that can work here (root, apt-get on PATH,
# ENRICH_TEST_DEPS not "check"), without starting the packages' own services. Otherwise the
# script stops before any test runs, naming the command that installs what is missing.
#
#   tools/test-deps.sh            find, else install, else stop (exit 1)
#   ENRICH_TEST_DEPS=check tools/test-deps.sh   find, else stop: never installs
set -euo pipefail

mode=${ENRICH_TEST_DEPS:-install}
case "$mode" in
  install|check) ;;
  *) echo "test-deps: ENRICH_TEST_DEPS=$mode: use install (the default) or check" >&2; exit 2 ;;
esac

have_pg_server() {
  [ -n "${TEST_DATABASE_URL:-}" ] && return 0
  (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
}
have_pg_bin() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null; }
have_pgbouncer() { [ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null; }
# The path the deploy tests run (deploy/promtool_test.go): they fail, never skip, without it.
have_promtool() { [ -x /usr/bin/promtool ]; }

missing=()
have_pg_server || have_pg_bin || missing+=(postgresql)
have_pgbouncer || missing+=(pgbouncer)
have_promtool || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0

cmd="apt-get install ${missing[*]}"
if [ "$mode" = check ] || [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "test-deps: make test needs ${missing[*]}, which this machine lacks." >&2
  echo "test-deps: install it first: sudo $cmd   (or run tools/test-deps.sh as root)" >&2
  exit 1
fi

echo "test-deps: installing ${missing[*]} for the tests: $cmd (ENRICH_TEST_DEPS=check only checks)" >&2
# A package's own service is not for the tests (they start their own server and pooler, and
# use only promtool of the prometheus package, never its server): tell
# invoke-rc.d not to start it, unless the machine already has such a policy.
policy=/usr/sbin/policy-rc.d
own_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
fi
trap '[ -n "$own_policy" ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
# A package list older than the archive makes the install fail; one update first.
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for p in "${missing[@]}"; do
  case "$p" in
    postgresql) have_pg_bin || { echo "test-deps: postgresql installed but no initdb found" >&2; exit 1; } ;;
    pgbouncer) have_pgbouncer || { echo "test-deps: pgbouncer installed but not found" >&2; exit 1; } ;;
    prometheus) have_promtool || { echo "test-deps: prometheus installed but no /usr/bin/promtool" >&2; exit 1; } ;;
  esac
done
echo "test-deps: installed ${missing[*]}" >&2
