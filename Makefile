# Ripple: `make dev` runs everything locally, `make test` runs every test.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)

PKGS := ./schema/... ./migrations/... ./testenv/... ./ingest/... ./catchup/... ./gateway/... \
        ./writer/... ./client/... ./cmd/ripple/... ./e2e/...
GO_TEST_FLAGS ?= -race -count=1 -timeout 18m

.PHONY: dev test bench build deps vet fuzz clean

deps:
	@scripts/ensure-deps.sh

build: deps
	go build -o bin/ripple ./cmd/ripple

dev: build
	./bin/ripple dev

test: deps
	go vet $(PKGS)
	go test $(GO_TEST_FLAGS) $(PKGS)

# Benchmarks (figures recorded in BENCHMARKS.md). Heavy: run alone on the machine.
bench: deps
	RIPPLE_BENCH=1 go test -run '^$$' -bench . -benchtime 1x -timeout 60m ./ingest/ ./catchup/ ./writer/ ./migrations/
	RIPPLE_BENCH=1 go test -run '^$$' -bench . -benchtime 1x -timeout 60m ./e2e/...
	go test -run '^$$' -bench . -benchmem ./schema/ ./gateway/ ./client/

# Short fuzzing session for every decoder of outside bytes.
fuzz: deps
	scripts/fuzz.sh

clean:
	rm -rf bin .ripple
