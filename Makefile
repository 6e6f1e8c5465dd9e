# enrich: the two commands a newcomer needs are `make demo` and `make test`.
GO      ?= go
BIN     ?= bin/enrich
PKGS    ?= ./...
# Go: go.mod's toolchain line names the patched Go to build with. The installed Go's go.env says
# GOTOOLCHAIN=local, which ignores that line; "auto" makes an older go command switch to the
# toolchain go.mod names (fetched once from the module proxy into the module cache), and
# go test passes that Go on to the tests that run `go build`. `make X GOTOOLCHAIN=local` opts out.
GOTOOLCHAIN ?= auto
export GOTOOLCHAIN
GO_MIN  := $(shell sed -n 's/^toolchain //p' go.mod)
# Pinned tools for `make vuln`, both fetched through the Go module proxy.
VULN_VERSION   ?= v1.9.0
VULNDB_VERSION ?= v0.0.0-20261105234957-e22db6528018
# Go micro-benchmarks (make bench-go): several runs so medians can be quoted (the machine is
# shared and noisy). The end-to-end bench (make bench) takes medians of its own runs.
BENCH_COUNT ?= 5
FUZZTIME    ?= 30s
# The binary's version (`enrich version`, the runs table, enrich_build_info): the nearest tag,
# commits since and the commit, "-dirty" with uncommitted changes; `make build VERSION=1.2.3`
# names a release. Empty outside a git checkout: the module version Go records.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)

.PHONY: all build test test-deps lint vuln bench bench-quick bench-go demo fuzz soak clean

all: lint test build

# The release build: a static binary (no cgo), no local paths in it, and never an unpatched Go.
# -buildvcs=true stamps the revision even where GOFLAGS=-buildvcs=false, and fails rather than
# leave it out when git is missing; VERSION is linked into main.version.
build:
	@v=$$($(GO) env GOVERSION); \
	if [ "$$(printf '%s\n' "$(GO_MIN)" "$$v" | sort -V | head -n1)" != "$(GO_MIN)" ]; then \
	  echo "build: $$v is older than $(GO_MIN), the toolchain go.mod names (GOTOOLCHAIN=$$GOTOOLCHAIN)"; exit 1; fi
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=true -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/enrich

# Every test that touches the store runs against a real PostgreSQL: TEST_DATABASE_URL, else the
# local server on 127.0.0.1:5432, else a throw-away cluster from the installed initdb/pg_ctl.
# test-deps finds PostgreSQL and pgbouncer first, installs what is missing with apt-get when run
# as root, or stops before any test naming the command (ENRICH_TEST_DEPS=check never installs).
# One package at a time (-p 1): several packages run real binaries, a simulator and PostgreSQL
# each. Within a package 4 tests at a time (-parallel 4; Go's default is GOMAXPROCS, 2 here):
# most of the time the tests wait on subprocesses, a database restart or an instance's rate, and
# the machine sits idle (make test took 4 min 41 s with 2 at a time, 2 min 43 s with 4). But -p 1
# also compiles one package at a time, so the test binaries are compiled first on every core
# (-exec true: built, not run), and the release build the tests run as a subprocess with them:
# on a fresh machine 5 min 27 s without this step, about 4 min 40 s with it. No test asserts on
# what the clock measures (rates, 429s, memory growth): make bench does.
test: test-deps build
	$(GO) test -race -count=1 -exec true $(PKGS) >/dev/null
	$(GO) test -race -count=1 -p 1 -parallel 4 -timeout 30m $(PKGS)

test-deps:
	@bash tools/test-deps.sh

lint:
	$(GO) vet $(PKGS)
	@out=$$("$$($(GO) env GOROOT)/bin/gofmt" -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# govulncheck against a database built offline from the golang.org/x/vulndb module (cached per
# version beside the Go build cache; the first run fetches and builds it: about 2 minutes, 175 MB).
vuln:
	GOBIN=$(CURDIR)/bin $(GO) install golang.org/x/vuln/cmd/govulncheck@$(VULN_VERSION)
	@db=$$(GO=$(GO) VULNDB_VERSION=$(VULNDB_VERSION) bash tools/vulndb/build.sh) && \
	echo "bin/govulncheck -db file://$$db $(PKGS)  ($$($(GO) env GOVERSION))" && \
	bin/govulncheck -db "file://$$db" $(PKGS)

# End to end: the real binary against the simulator over loopback and a real PostgreSQL
# (DATABASE_URL, else 127.0.0.1:5432, else a throw-away cluster), every figure of bench/README.md
# in one run, printed as a table and written to bench/results.json; perf reports of one extra
# ceiling run go to bench/profile/ when perf is installed. 14 to 19 minutes on 2 cores, about 3 of them the plan scenario.
bench:
	$(GO) run ./bench --out bench/results.json --profile bench/profile

# The same table at small sizes, in under a minute (bench/results-quick.json, not committed).
bench-quick:
	$(GO) run ./bench --quick --out bench/results-quick.json

# The Go micro-benchmarks (the simulator over loopback against a bare net/http handler).
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCH_COUNT) $(PKGS)

# The whole job end to end against the built-in simulator and a local PostgreSQL.
demo: build
	./$(BIN) demo

# The engine's simulation (enrich/sim_test.go) over many more seeds than make test's 2,000: the
# real engine in a synctest bubble against the store's in-memory model and a scripted API, a
# random fault schedule per seed. A failing seed prints the command that replays it.
SOAK_SEEDS ?= 100000
SOAK_FIRST ?= 1
soak:
	ENRICH_SIM_SEEDS=$(SOAK_SEEDS) ENRICH_SIM_FIRST=$(SOAK_FIRST) $(GO) test -race -count=1 -timeout 0 -run '^TestSimulation$$' ./enrich/

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseTarget$$' -fuzztime $(FUZZTIME) ./greenapi/
	$(GO) test -run '^$$' -fuzz '^FuzzParseAvatarResponse$$' -fuzztime $(FUZZTIME) ./greenapi/

clean:
	rm -rf bin
