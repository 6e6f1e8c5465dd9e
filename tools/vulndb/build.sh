#!/usr/bin/env bash
# Builds a Go vulnerability database (the v1 layout that `govulncheck -db file://DIR` reads)
# offline, from the golang.org/x/vulndb module that the Go module proxy serves: no access to
# the public vulnerability database site is needed. Prints the database directory on stdout.
#
# The module holds the reports as OSV files under data/osv; its cmd/gendb turns them into the
# database but reads them from a git repository (for each entry's modified/published dates), so
# the files are committed to a throw-away repository first, dated at the module version's own
# timestamp. The result is cached per vulndb version and reused until VULNDB_VERSION changes.
#
# Environment: VULNDB_VERSION (pinned below; the Makefile passes its own), GO (default go),
# VULNDB_CACHE (default: enrich-vulndb beside the Go build cache).
set -euo pipefail

VULNDB_VERSION=${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}
GO=${GO:-go}
cache=${VULNDB_CACHE:-$(dirname "$("$GO" env GOCACHE)")/enrich-vulndb}
db=$cache/$VULNDB_VERSION

if [ -f "$db/index/db.json" ] && [ -f "$db/index/modules.json" ]; then
  echo "$db"
  exit 0
fi

log() { echo "vulndb: $*" >&2; }
mkdir -p "$cache"
work=$(mktemp -d)
out=$(mktemp -d "$cache/.build.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work" "$out"' EXIT

# Outside any module, so neither this repository's go.mod nor its go.sum is touched. gendb pulls
# in about 170 MB of modules (cloud clients it does not use here) and 1.5 GB unpacked with its
# build cache: they go to scratch caches, removed afterwards, since only the database is kept.
cd "$work"
export GOMODCACHE="$work/mod" GOCACHE="$work/go-build"
log "fetching golang.org/x/vulndb@$VULNDB_VERSION from the module proxy"
src=$(GO111MODULE=on GOFLAGS=-mod=mod "$GO" mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" \
      | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$src" ] || [ ! -d "$src/data/osv" ]; then
  log "golang.org/x/vulndb@$VULNDB_VERSION has no data/osv"; exit 1
fi

log "building cmd/gendb"
GO111MODULE=on GOBIN="$work/bin" "$GO" install "golang.org/x/vulndb/cmd/gendb@$VULNDB_VERSION"

# A pseudo-version's middle field is its commit time (UTC): v0.0.0-YYYYMMDDhhmmss-hash.
stamp=$(printf '%s\n' "$VULNDB_VERSION" | sed -n 's/^v[0-9.]*-\([0-9]\{14\}\)-.*/\1/p')
if [ -n "$stamp" ]; then
  date="${stamp:0:4}-${stamp:4:2}-${stamp:6:2}T${stamp:8:2}:${stamp:10:2}:${stamp:12:2}Z"
else
  date=2000-01-01T00:00:00Z
fi

log "committing $(ls "$src/data/osv" | wc -l) OSV reports to a scratch git repository"
mkdir -p repo/data
cp -R "$src/data/osv" repo/data/osv
chmod -R u+w repo
git -C repo init -q
git -C repo add data/osv
GIT_AUTHOR_DATE=$date GIT_COMMITTER_DATE=$date \
  git -C repo -c user.name=vulndb -c user.email=vulndb@localhost -c commit.gpgsign=false \
  commit -q -m "golang.org/x/vulndb@$VULNDB_VERSION"

log "generating the database"
"$work/bin/gendb" -repo "$work/repo" -out "$out/db" >&2
# govulncheck reads a file:// database's plain .json files; the .gz twins are for web serving.
find "$out/db" -name '*.json.gz' -delete
[ -f "$out/db/index/db.json" ] || { log "gendb wrote no index/db.json"; exit 1; }

# Keep only this version: older databases are superseded.
find "$cache" -mindepth 1 -maxdepth 1 -name 'v*' -exec rm -rf {} +
mv "$out/db" "$db"
log "database ready: $db ($(ls "$db/ID" | wc -l) entries)"
echo "$db"
