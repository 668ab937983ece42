# kvmpod: run a pod inside its own lightweight VM.
#
#   make demo   install what is missing, build, boot the example pod
#   make test   install what is missing, build, lint, unit and boot tests
#
# Both need root on a Debian host (QEMU, the guest kernel and vsock).

SHELL       := /bin/sh
CARGO       ?= cargo
MUSL        := x86_64-unknown-linux-musl
AGENT       := target/$(MUSL)/agent/kvmpod-agent
HOST_CTL    := target/release/host-ctl
SHIM        := target/release/containerd-shim-kvmpod-v2
DEMO        := examples/demo
# Boot tests each boot a VM; under TCG two at a time suit a 2-core host.
BOOT_TEST_THREADS ?= 2

export PATH := $(PATH):$(HOME)/.cargo/bin

# Seconds each fuzz target runs in `make test`.
FUZZ_SECONDS ?= 60

.PHONY: all deps build agent host stage1 examples demo test lint unit-test boot-test fuzz bench install clean

all: build

deps:
	@scripts/deps.sh

build: agent host

agent:
	$(CARGO) build --locked -p kvmpod-agent --profile agent --target $(MUSL)

host:
	$(CARGO) build --locked --release -p host-ctl -p rootfs-builder -p containerd-shim-kvmpod-v2

# kvmpod's stage1 guest image (the agent and the kernel modules every pod
# boots), built once for this agent and kernel; prints its digest and path.
stage1: build
	KVMPOD_AGENT=$(CURDIR)/$(AGENT) $(HOST_CTL) stage1 build

examples: $(DEMO)/rootfs/bin/busybox $(DEMO)/data

$(DEMO)/rootfs/bin/busybox:
	scripts/mkroot.sh $(DEMO)/rootfs

$(DEMO)/data:
	mkdir -p $@

demo: deps build examples
	$(HOST_CTL) run --rm --timings $(DEMO)/pod.json
	@echo "demo: the producer's file on the host:"; cat $(DEMO)/data/last-run.txt

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path tests/fuzz/Cargo.toml -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

unit-test:
	$(CARGO) test --locked --workspace --exclude kvmpod-tests

# The boot suite's wall time is printed at the end, pass or fail.
boot-test: build
	@start=$$(date +%s); \
	KVMPOD_HOST_CTL=$(CURDIR)/$(HOST_CTL) KVMPOD_AGENT=$(CURDIR)/$(AGENT) KVMPOD_SHIM=$(CURDIR)/$(SHIM) \
	    $(CARGO) test --locked --no-fail-fast -p kvmpod-tests -- --test-threads=$(BOOT_TEST_THREADS) --show-output; \
	rc=$$?; echo "boot tests: $$(( $$(date +%s) - start )) s of wall time (exit status $$rc)"; exit $$rc

# The fuzz targets (tests/fuzz) run without a sanitizer, so they build on
# the stable toolchain; a crash or a hang fails the run.
# The corpora grow in tests/fuzz/corpus (not committed); seeds/ is the start.
fuzz:
	mkdir -p tests/fuzz/corpus/manifest tests/fuzz/corpus/agent_requests
	cd tests/fuzz && $(CARGO) fuzz run --sanitizer none manifest corpus/manifest seeds/manifest \
	    -- -max_total_time=$(FUZZ_SECONDS)
	cd tests/fuzz && $(CARGO) fuzz run --sanitizer none agent_requests corpus/agent_requests seeds/agent_requests \
	    -- -max_total_time=$(FUZZ_SECONDS)

test: deps build lint unit-test boot-test fuzz

# Speed and size, measured: a table, target/bench/results.json and
# target/bench/boot-timeline.png. KVMPOD_BENCH_RUNS sets the runs per figure.
bench: deps build
	KVMPOD_HOST_CTL=$(CURDIR)/$(HOST_CTL) KVMPOD_AGENT=$(CURDIR)/$(AGENT) KVMPOD_SHIM=$(CURDIR)/$(SHIM) \
	    $(CARGO) run --locked --release -p kvmpod-tests --bin kvmpod-bench

# host-ctl and the containerd shim on PATH (containerd finds the shim there
# as runtime io.containerd.kvmpod.v2), the agent where host-ctl looks, and
# host-ctl's shell completions and manual pages (made from its --help).
PREFIX ?= /usr/local
SHARE   = $(DESTDIR)$(PREFIX)/share
install: build
	install -D -m 0755 $(HOST_CTL) $(DESTDIR)$(PREFIX)/bin/host-ctl
	install -D -m 0755 $(SHIM) $(DESTDIR)$(PREFIX)/bin/containerd-shim-kvmpod-v2
	install -D -m 0755 $(AGENT) $(DESTDIR)$(PREFIX)/lib/kvmpod/kvmpod-agent
	install -d $(SHARE)/bash-completion/completions $(SHARE)/zsh/site-functions \
	    $(SHARE)/fish/vendor_completions.d $(SHARE)/man/man1
	$(HOST_CTL) completion bash > $(SHARE)/bash-completion/completions/host-ctl
	$(HOST_CTL) completion zsh > $(SHARE)/zsh/site-functions/_host-ctl
	$(HOST_CTL) completion fish > $(SHARE)/fish/vendor_completions.d/host-ctl.fish
	$(HOST_CTL) manpages $(SHARE)/man/man1

clean:
	$(CARGO) clean
	rm -rf $(DEMO)/rootfs $(DEMO)/data
