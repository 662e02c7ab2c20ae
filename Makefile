# pmgcm build, test and lint. `make help` lists the targets.
GO          ?= go
BIN         ?= bin
# make install: $(DESTDIR)$(PREFIX)/bin, .../share/man, ...; the unit under $(UNITDIR).
PREFIX      ?= /usr/local
DESTDIR     ?=
BINDIR      ?= $(PREFIX)/bin
MANDIR      ?= $(PREFIX)/share/man
DOCDIR      ?= $(PREFIX)/share/doc/pmgcm
UNITDIR     ?= $(PREFIX)/lib/systemd/system
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# The whole suite stays well under CI's budget; the timeout catches a hang.
TEST_TIMEOUT ?= 12m

.PHONY: all build test test-unit test-integration test-netfault drill lint fmt fuzz demo demo-stop clean help bench man install

all: build

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## build pmgcm and pmgclusterd into bin/
	$(GO) build -o $(BIN)/pmgcm ./cmd/pmgcm
	$(GO) build -o $(BIN)/pmgclusterd ./cmd/pmgclusterd

test: ## run every test (unit and integration) with the race detector
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

test-unit: ## run the unit tests only
	$(GO) test -race -count=1 -short ./...

test-integration: ## run the integration tests (real pmgclusterd processes on 127.0.0.x)
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./integration/...

test-netfault: ## the real network fault tests in network namespaces (root; installs nft/ip if missing)
	./scripts/netfault-deps.sh
	$(GO) test -race -count=1 ./internal/netfault/
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -run 'TestNetfault|TestLinearizableNetfault|TestDiskFull' -v ./integration/

drill: ## the linearizability check under faults for 60s (seed: PMGCM_LIN_SEED; on failure the visualization goes to PMGCM_LIN_OUT or a temp dir)
	PMGCM_LIN_DURATION=60s $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -run TestLinearizable -v ./integration/

lint: ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go') 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

fuzz: ## fuzz the command decoder for a minute
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 60s ./fsm/

bench: ## benchmark a fresh 3-node localhost cluster (BENCH_FLAGS: e.g. --workloads seq_put,failover); see docs/performance.md
	$(GO) build -o $(BIN)/pmgclusterd ./cmd/pmgclusterd
	$(GO) run ./cmd/pmgcm-bench --pmgclusterd $(BIN)/pmgclusterd $(BENCH_FLAGS)

man: ## render the manual pages pmgcm(1) and pmgclusterd(8) from the commands' help into bin/man
	rm -rf $(BIN)/man
	$(GO) run ./cmd/pmgcm-docs -dir $(BIN)/man

install: build man ## install binaries, systemd unit, man pages, completions, example config under $(DESTDIR)$(PREFIX)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(DOCDIR) $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	install -m 0755 $(BIN)/pmgcm $(BIN)/pmgclusterd $(DESTDIR)$(BINDIR)/
	sed 's|/usr/bin/pmgclusterd|$(BINDIR)/pmgclusterd|' packaging/systemd/pmgclusterd.service >$(DESTDIR)$(UNITDIR)/pmgclusterd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/pmgclusterd.service
	install -m 0644 $(BIN)/man/man1/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 $(BIN)/man/man8/*.8 $(DESTDIR)$(MANDIR)/man8/
	$(BIN)/pmgcm completion bash >$(DESTDIR)$(BASHCOMPDIR)/pmgcm
	$(BIN)/pmgcm completion zsh >$(DESTDIR)$(ZSHCOMPDIR)/_pmgcm
	install -m 0644 packaging/pmgclusterd.toml $(DESTDIR)$(DOCDIR)/

demo: build ## start a local cluster under ./run and print its status
	./scripts/demo.sh start

demo-stop: ## stop the demo cluster
	./scripts/demo.sh stop

clean: ## remove build output and the demo's state
	rm -rf $(BIN) run
