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
#                overhead, cold start (process and Docker) and warm overhead, receipt verification
#   make fuzz    every fuzz target in the tree, each for FUZZTIME (default 20s)
#   make fuzz-smoke  every fuzz target for FUZZSMOKE (default 2s), one instrumented test binary
#                per package; `make test` runs it after the unit tests
#   make release static, stripped, reproducible builds of shoal and shoal-reference for
#                linux/amd64 and linux/arm64 into dist/, with SHA256SUMS (CGO_ENABLED=0: no NVML,
#                GPUs are declared)
#   make image   a node image FROM scratch (Dockerfile.local) with static binaries, built by the
#                local Docker engine without pulling anything; IMAGE=name:tag (default shoal:local)
#   make chromium  installs Debian's chromium for the dashboard's browser test (root and apt-get
#                only; elsewhere the test skips and says why); `make test` runs it first

GO       ?= go
BIN      ?= bin/shoal
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
RUNHOME  ?= $(CURDIR)/.shoal-run
FUZZTIME ?= 20s
FUZZSMOKE ?= 2s
# The Alibaba GPU cluster trace the placement benchmark replays (not in the repo).
TRACE    ?= $(CURDIR)/../shared/traces/alibaba-gpu-v2023
# Release builds: where and for which platforms; the image `make image` builds.
DIST      ?= $(CURDIR)/dist
PLATFORMS ?= linux/amd64 linux/arm64
IMAGE     ?= shoal:local
IMAGEDIR  ?= $(CURDIR)/bin/image
# go-nvml's C header marks some NVML calls deprecated; we call none of them.
export CGO_CFLAGS ?= -O2 -Wno-deprecated-declarations

.PHONY: build run test e2e bench lint fuzz fuzz-smoke clean release image chromium

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

test: chromium lint
	$(GO) test -race -count=1 -timeout 10m ./...
	@$(MAKE) --no-print-directory fuzz-smoke

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

# Test files with fuzz targets, new ones not yet committed included.
FUZZFILES = git ls-files --cached --others --exclude-standard '*_test.go' | xargs grep -l '^func Fuzz'

fuzz:
	@set -e; for f in $$($(FUZZFILES)); do \
		pkg=./$$(dirname $$f); \
		for t in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$f | cut -d' ' -f2); do \
			echo "== $$pkg $$t ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

# One instrumented binary per package (linking dominates a 2 s run), run in
# the package's directory (for testdata/fuzz) with go test's corpus cache, so
# what one run finds seeds the next and `make fuzz`. Minimising a new input
# is cut to 10 runs: in packages that instrument libp2p one run takes
# milliseconds, and the default (60 s of runs) would eat the budget. Go up
# to 1.26 may end a timed run with a bare "context deadline exceeded" and
# no failing input (go.dev/issue/75804, a race in its fuzzing coordinator):
# that alone is reported and passes; a failure that wrote an input to
# testdata/fuzz, or any other failure, stops the build.
fuzz-smoke:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; cache=$$($(GO) env GOCACHE)/fuzz; \
	for dir in $$($(FUZZFILES) | xargs -n1 dirname | sort -u); do \
		ts=$$(cat $$dir/*_test.go | grep -o '^func Fuzz[A-Za-z0-9_]*' | cut -d' ' -f2); \
		pkg=$$($(GO) list ./$$dir); bin=$$tmp/$$(echo $$dir | tr / _).test; \
		$(GO) test -c -ldflags '-s -w' -fuzz "^$$(echo $$ts | cut -d' ' -f1)$$" -o $$bin ./$$dir; \
		for t in $$ts; do \
			before=$$(ls $$dir/testdata/fuzz/$$t 2>/dev/null | wc -l); \
			if (cd $$dir && $$bin -test.run '^$$' -test.fuzz "^$$t$$" -test.fuzztime $(FUZZSMOKE) \
					-test.fuzzminimizetime 10x -test.fuzzcachedir $$cache/$$pkg) > $$tmp/log 2>&1; then \
				echo "ok   ./$$dir $$t ($(FUZZSMOKE)): $$(grep -o 'execs: [0-9]*' $$tmp/log | tail -1)"; \
			elif [ "$$(ls $$dir/testdata/fuzz/$$t 2>/dev/null | wc -l)" = "$$before" ] && \
					[ "$$(grep -v '^fuzz: \|^warning: \|^--- FAIL\|^FAIL\|^exit status' $$tmp/log)" = "    context deadline exceeded" ]; then \
				echo "ok   ./$$dir $$t ($(FUZZSMOKE)): stopped by go.dev/issue/75804, no failing input"; \
			else cat $$tmp/log; echo "FAIL ./$$dir $$t"; exit 1; fi; \
		done; \
	done

chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the dashboard's browser test (apt-get, about a minute)"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
			|| echo "chromium not installed: the browser test will skip"; \
	else echo "no chromium, and no apt-get as root to install it: the browser test will skip"; fi

# Static builds need no C toolchain and run on any Linux of the architecture;
# without cgo there is no NVML, so such a node uses declared GPUs (`shoal
# version` says so). -trimpath and a fixed toolchain make them reproducible.
release:
	rm -rf $(DIST) && mkdir -p $(DIST)
	@set -e; for p in $(PLATFORMS); do os=$${p%/*}; arch=$${p#*/}; \
		echo "== $$os/$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags "$(LDFLAGS)" \
			-o $(DIST)/shoal-$(VERSION)-$$os-$$arch ./cmd/shoal; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags "-s -w" \
			-o $(DIST)/shoal-reference-$(VERSION)-$$os-$$arch ./cmd/shoal-reference; \
	done
	cd $(DIST) && sha256sum shoal-* > SHA256SUMS && cat SHA256SUMS

# The root file system of Dockerfile.local: the static binaries, /tmp, the
# home volume, CA certificates when this machine has them, and a passwd.
image:
	rm -rf $(IMAGEDIR)
	mkdir -p $(IMAGEDIR)/rootfs/usr/local/bin $(IMAGEDIR)/rootfs/tmp $(IMAGEDIR)/rootfs/root \
		$(IMAGEDIR)/rootfs/var/lib/shoal $(IMAGEDIR)/rootfs/etc/ssl/certs
	chmod 1777 $(IMAGEDIR)/rootfs/tmp
	chmod 700 $(IMAGEDIR)/rootfs/var/lib/shoal
	printf 'root:x:0:0:root:/root:/nonexistent\nnobody:x:65534:65534:nobody:/nonexistent:/nonexistent\n' > $(IMAGEDIR)/rootfs/etc/passwd
	printf 'root:x:0:\nnogroup:x:65534:\n' > $(IMAGEDIR)/rootfs/etc/group
	if [ -f /etc/ssl/certs/ca-certificates.crt ]; then cp /etc/ssl/certs/ca-certificates.crt $(IMAGEDIR)/rootfs/etc/ssl/certs/; fi
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(IMAGEDIR)/rootfs/usr/local/bin/shoal ./cmd/shoal
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(IMAGEDIR)/rootfs/usr/local/bin/shoal-reference ./cmd/shoal-reference
	docker build -f $(CURDIR)/Dockerfile.local -t $(IMAGE) $(IMAGEDIR)

clean:
	rm -rf bin $(RUNHOME) $(DIST)
