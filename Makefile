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
# make fuzz: how long each fuzz target runs, and the most time spent minimizing one new
# input (the default, 60s, would take a slow target's whole turn).
FUZZTIME    ?= 10s
FUZZMINTIME ?= 2s
# The build's version (pmgcm --version, status): from git, or the fallback when there is
# no git history (a source tarball). See internal/version and RELEASES.
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.2.0-dev)
LDFLAGS     := -X github.com/pmgcm/pmgcm/internal/version.Version=$(VERSION)
# make upgrade-drill: rolling restarts after the upgrade, and acknowledged writes per step.
UPGRADE_DRILL_ROUNDS ?= 3
UPGRADE_DRILL_WRITES ?= 100

.PHONY: all build test test-unit test-integration test-netfault drill upgrade-drill lint fmt fuzz demo demo-stop clean help bench man install

all: build

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## build pmgcm and pmgclusterd into bin/
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/pmgcm ./cmd/pmgcm
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/pmgclusterd ./cmd/pmgclusterd

test: ## run every test (unit and integration) with the race detector
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

test-unit: ## run the unit tests only (-short: the integration tests skip without building the daemons)
	$(GO) test -race -count=1 -short ./...

test-integration: ## run the integration tests (real pmgclusterd processes on 127.0.0.x)
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./integration/...

test-netfault: ## the real network fault tests in network namespaces (root; installs nft/ip if missing)
	./scripts/netfault-deps.sh
	$(GO) test -race -count=1 ./internal/netfault/
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -run 'TestNetfault|TestLinearizableNetfault|TestDiskFull' -v ./integration/

drill: ## the linearizability check under faults for 60s (seed: PMGCM_LIN_SEED; on failure the visualization goes to PMGCM_LIN_OUT or a temp dir)
	PMGCM_LIN_DURATION=60s $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -run TestLinearizable -v ./integration/

upgrade-drill: ## upgrade a cluster of the previous release (RELEASES) node by node under writes and mail, longer than the suite does (UPGRADE_DRILL_ROUNDS, UPGRADE_DRILL_WRITES)
	PMGCM_UPGRADE_ROUNDS=$(UPGRADE_DRILL_ROUNDS) PMGCM_UPGRADE_WRITES=$(UPGRADE_DRILL_WRITES) $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -run 'TestUpgrade' -v ./integration/

lint: ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go') 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

fuzz: ## run every fuzz target (each func FuzzXxx of a _test.go file) for FUZZTIME (10s) each
	@set -e; grep -r --include='*_test.go' -o '^func Fuzz[A-Za-z0-9_]*' . | sort | while IFS=: read -r file fn; do \
		pkg=./$$(dirname "$${file#./}"); name=$${fn#func }; \
		echo "fuzz: $$pkg $$name"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINTIME) "$$pkg"; \
	done

bench: ## benchmark a fresh 3-node localhost cluster (BENCH_FLAGS: e.g. --workloads seq_put,failover); see docs/performance.md
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/pmgclusterd ./cmd/pmgclusterd
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

# make deb: the Debian package into $(DEB_DIR); VERSION=1.2.3 sets its version (default
# from git describe), DEB_ARCH and DEB_MAINTAINER the other control fields.
DEB_DIR ?= dist

.PHONY: deb check-packaging
deb: ## build the Debian package dist/pmgcm_VERSION_ARCH.deb with dpkg-deb (offline; VERSION= to set the version)
	VERSION="$(VERSION)" MAKE="$(MAKE)" GO="$(GO)" scripts/mkdeb.sh $(DEB_DIR)

check-packaging: ## check the package, the Prometheus rules and the dashboard (dpkg-deb, lintian, promtool; skips what is not installed)
	$(GO) test -count=1 -run 'TestDeb|TestAlert|TestDashboard' -v ./packaging/

demo: build ## start a local cluster under ./run and print its status
	./scripts/demo.sh start

demo-stop: ## stop the demo cluster
	./scripts/demo.sh stop

clean: ## remove build output and the demo's state
	rm -rf $(BIN) run $(DEB_DIR)
