# The one developer entry point. `make help` lists the targets.
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: help fmt fmt-check lint build unit test e2e bench demo ci deps image soak bench-smoke bench-ci

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

fmt: ## format the code
	$(CARGO) fmt --all

fmt-check: ## fail if the code is not formatted
	$(CARGO) fmt --all -- --check

lint: ## clippy on every target, warnings are errors
	$(CARGO) clippy --workspace --all-targets -- -D warnings

build: ## debug build of the ferrolb binary
	$(CARGO) build --bin ferrolb

unit: ## tests that need no root and no network namespaces
	$(CARGO) test --workspace --lib --bins

deps: ## install the Debian packages the end-to-end tests drive (root)
	bash e2e/scripts/install-deps.sh

test: build ## every test: unit, fixtures, and end-to-end in network namespaces (root)
	$(CARGO) test --workspace

e2e: build ## only the end-to-end tests (root)
	$(CARGO) test -p ferrolb-e2e

soak: build ## long reliability runs (root, ~25 min): faults, partition, ARP flood, fuzzing, controller SIGKILL, apiserver outage
	FERROLB_SOAK=1 $(CARGO) test -p ferrolb-e2e --test faults -- --nocapture --test-threads=1
	FERROLB_SOAK=1 $(CARGO) test -p ferrolb-e2e --test layer2 -- --nocapture --test-threads=1 partition flood
	FERROLB_SOAK=1 $(CARGO) test -p ferrolb-e2e --test k8s -- --nocapture controller_killed_mid_creation apiserver_outage churn_soak
	FERROLB_SOAK=1 $(CARGO) test -p ferrolb-config --test fixtures -- --nocapture fuzz_
	$(CARGO) test -p ferrolb-speaker --lib -- --nocapture forge

image: ## OCI image without Docker: static musl binary + umoci, then run it (root; not in ci: a release build)
	bash e2e/image/build-image.sh

demo: ## the README's "run it": BIRD, two ferrolb nodes and a client in network namespaces (root)
	CARGO="$(CARGO)" bash e2e/demo/demo.sh

bench: ## benchmarks vs references (allocator; BGP, Layer2, memory as root): tables + target/bench/results.jsonl
	CARGO="$(CARGO)" bash e2e/bench/run.sh

bench-smoke: ## every benchmark at a small size (minutes: the network pieces build release binaries)
	CARGO="$(CARGO)" bash e2e/bench/run.sh --smoke

bench-ci: build ## every benchmark at smoke size with debug builds (~4 min as root; keeps them working in ci)
	$(CARGO) bench --quiet --profile dev -p ferrolb-controller --bench allocator -- --smoke >/dev/null
	@if [ "$$(id -u)" = 0 ]; then \
	  for b in bgp layer2 memory; do \
	    echo "bench-ci: e2e/bench/$$b.sh --smoke"; \
	    FERROLB_BIN="$(CURDIR)/target/debug/ferrolb" CARGO="$(CARGO)" bash e2e/bench/$$b.sh --smoke >/dev/null || exit 1; \
	  done; \
	else echo "bench-ci: network benchmarks skipped (need root)"; fi

ci: fmt-check lint test bench-ci ## what .ci/run runs after installing dependencies
