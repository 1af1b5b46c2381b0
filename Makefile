# shoal — build, run, test.
#
#   make run     a one-node pool on loopback with a declared GPU and the gateway on 127.0.0.1:8080
#                (no GPU, registry or internet needed); README shows how to serve the reference model
#   make test    vet, format check and every test (race detector on the concurrent packages)
#   make e2e     the slower end-to-end scenarios under test/
#   make bench   benchmarks: 50-node pool formation, join/detect/RSS/start-up of real processes,
#                weight fetch: 1 GiB pull vs raw TCP vs HTTP, and fan-out to N=1..8 nodes in
#                network namespaces at 50 MB/s (root and iproute2; skipped without them),
#                placement latency and the trace replay of every policy (TRACE=dir), gateway
#                overhead, receipt verification
#   make fuzz    every fuzz target in the tree, each for FUZZTIME (default 20s)

GO       ?= go
BIN      ?= bin/shoal
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
RUNHOME  ?= $(CURDIR)/.shoal-run
FUZZTIME ?= 20s
# The Alibaba GPU cluster trace the placement benchmark replays (not in the repo).
TRACE    ?= $(CURDIR)/../shared/traces/alibaba-gpu-v2023
# go-nvml's C header marks some NVML calls deprecated; we call none of them.
export CGO_CFLAGS ?= -O2 -Wno-deprecated-declarations

.PHONY: build run test e2e bench lint fuzz clean

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/shoal
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(dir $(BIN))shoal-reference ./cmd/shoal-reference

run: build
	$(BIN) --home $(RUNHOME) up \
		--listen /ip4/127.0.0.1/udp/0/quic-v1 --listen /ip4/127.0.0.1/tcp/0 \
		--gpu "RTX 4090:24GiB:16384" --mdns=false --nat=false --gateway 127.0.0.1:8080

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

test: lint
	$(GO) test -race -count=1 -timeout 10m ./...

e2e: build
	SHOAL_E2E=1 $(GO) test -count=1 -timeout 30m -v ./test/...

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./mesh ./test/...
	$(GO) test -run '^$$' -bench . -timeout 30m ./scheduler/... ./runtime/gateway ./weightcache ./market
	@if [ -d "$(TRACE)" ]; then \
		for p in fgd bestfit firstfit worstfit random; do \
			$(BIN) sim --nodes $(TRACE)/openb_node_list_gpu_node.csv --pods $(TRACE)/openb_pod_list_default.csv --policy $$p --seeds 42-51; \
		done; \
	else echo "no GPU cluster trace at $(TRACE): shoal sim replay skipped"; fi

fuzz:
	@set -e; for f in $$(git ls-files '*_test.go' | xargs grep -l '^func Fuzz'); do \
		pkg=./$$(dirname $$f); \
		for t in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$f | cut -d' ' -f2); do \
			echo "== $$pkg $$t ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

clean:
	rm -rf bin $(RUNHOME)
