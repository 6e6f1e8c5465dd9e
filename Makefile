# enrich: the two commands a newcomer needs are `make demo` and `make test`.
GO      ?= go
BIN     ?= bin/enrich
PKGS    ?= ./...
# Benchmarks: several runs so medians can be quoted (the machine is shared and noisy).
BENCH_COUNT ?= 5
FUZZTIME    ?= 30s

.PHONY: all build test lint bench demo fuzz clean

all: lint test build

build:
	$(GO) build -o $(BIN) ./cmd/enrich

# Every test that touches the store runs against a real PostgreSQL: TEST_DATABASE_URL, else the
# local server on 127.0.0.1:5432, else a throw-away cluster from the installed initdb/pg_ctl.
test:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

lint:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCH_COUNT) $(PKGS)

# The whole job end to end against the built-in simulator and a local PostgreSQL.
demo: build
	./$(BIN) demo

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseTarget$$' -fuzztime $(FUZZTIME) ./greenapi/
	$(GO) test -run '^$$' -fuzz '^FuzzParseAvatarResponse$$' -fuzztime $(FUZZTIME) ./greenapi/

clean:
	rm -rf bin
