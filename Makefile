# chatd — run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin
DATA_DIR ?= chatd-data
FUZZTIME ?= 30s
TEST_TIMEOUT ?= 9m

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build chatd, chat and chatbench into ./bin.
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

.PHONY: run
run: build ## Build and start chatd on its embedded defaults (dev mode, data in ./chatd-data).
	./$(BIN)/chatd --dev --data-dir $(DATA_DIR)

CLUSTER_DIR ?= cluster-data

.PHONY: cluster
cluster: build ## Start a local cluster in the background: a broker, a store, redis-server, 2 cores, 2 gateways on 127.0.0.1:8080 (data in ./cluster-data).
	@command -v redis-server >/dev/null || $(MAKE) --no-print-directory test-deps
	./$(BIN)/chatbench cluster up --dir $(CLUSTER_DIR)

.PHONY: cluster-down
cluster-down: ## Stop the local cluster started by `make cluster` (its data stays in ./cluster-data).
	./$(BIN)/chatbench cluster down --dir $(CLUSTER_DIR)

.PHONY: lint
lint: ## gofmt and go vet.
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: test-deps
test-deps: ## Install what the tests need (Go modules; redis-server from apt when missing).
	$(GO) mod download
	@command -v redis-server >/dev/null || { \
	  sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$sudo apt-get update && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; }

.PHONY: test
test: test-deps lint ## Install test dependencies, then run every test with the race detector.
	$(GO) test -race -shuffle=on -timeout $(TEST_TIMEOUT) ./...
	cd third_party/netpoll && $(GO) test -race -run 'TestWaitModes' -timeout 5m . # the carried patch's own test (a module of its own)

.PHONY: bench-smoke
bench-smoke: build ## CI: every Go benchmark once, and small runs of each chatbench scenario (asserts completion and 0 lost, never timings).
	$(GO) test -run '^$$' -bench . -benchtime 1x ./...
	rm -rf bench/out
	./$(BIN)/chatbench density --conns 2000 --gateway-procs 2 --hold 3s --json > /dev/null
	./$(BIN)/chatbench latency --idle 1000 --pairs 20 --rate 500 --duration 5s --warmup 1s --gateway-procs 2 --json > /dev/null
	./$(BIN)/chatbench storm --clients 200 --json > /dev/null
	./$(BIN)/chatbench fanout --group-size 200 --rate 10 --duration 3s --warmup 1s --json > /dev/null
	./$(BIN)/chatbench receipts --group-size 200 --rate 10 --duration 3s --warmup 1s --json > /dev/null
	@test -s bench/out/density.json && test -s bench/out/latency.json && test -s bench/out/storm.json && test -s bench/out/fanout.json && test -s bench/out/receipts.json && echo "bench-smoke: reports written to bench/out"

.PHONY: bench
bench: build ## Run the Go benchmarks and mid-size chatbench runs (reports in bench/out); docs/benchmarks.md has the full-size commands.
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./wire/ ./gateway/ ./core/...
	./$(BIN)/chatbench latency --idle 10000 --rate 5000 --duration 15s
	./$(BIN)/chatbench density --conns 19000
	./$(BIN)/chatbench storm --clients 2000
	./$(BIN)/chatbench fanout --group-size 1024
	./$(BIN)/chatbench receipts --group-size 1024

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 30s).
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

.PHONY: clean
clean: ## Remove build output (not the data dir).
	rm -rf $(BIN)
