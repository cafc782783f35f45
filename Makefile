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
	  $$sudo apt-get update && $$sudo apt-get install -y redis-server; }

.PHONY: test
test: test-deps lint ## Install test dependencies, then run every test with the race detector.
	$(GO) test -race -shuffle=on -timeout $(TEST_TIMEOUT) ./...

.PHONY: bench-smoke
bench-smoke: build ## Run every Go benchmark once and a small 1:1 latency run (CI).
	$(GO) test -run '^$$' -bench . -benchtime 1x ./...
	./$(BIN)/chatbench latency --pairs 20 --rate 500 --duration 3s --warmup 1s --json > /dev/null

.PHONY: bench
bench: build ## Run the Go benchmarks and the 1:1 latency scenario; figures for docs/benchmarks.md.
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./wire/ ./gateway/ ./core/...
	./$(BIN)/chatbench latency --pairs 100 --rate 2000 --duration 20s

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 30s).
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

.PHONY: clean
clean: ## Remove build output (not the data dir).
	rm -rf $(BIN)
