#!/bin/sh
# Installs what kvmpod needs on a Debian host, and only what is missing:
#   apt:    qemu-system-x86 (QEMU), linux-image-amd64 (the guest kernel and
#           its modules), busybox-static (the examples' app roots and the
#           nested test host's L1 initramfs), file, fonts-dejavu-core (the
#           benchmark's chart), build-essential (a C compiler, make and
#           libc6-dev's static libc, to build lkvm), docker-registry and
#           skopeo (the registry `image pull` is tested against, and what
#           pushes test images into it), containerd (with ctr: what the
#           containerd shim is tested under; the tests start their own),
#           protobuf-compiler (protoc, which the k8s-cri crate's build needs:
#           the CRI client of the Kubernetes path's test), passt (user-mode
#           networking for QEMU pods), containernetworking-plugins (the CNI
#           bridge the tap-mode test wires pods with), iperf3 (the network
#           benchmark), tmux (the real terminal the CLI's terminal tests
#           drive)
#   rustup: the x86_64-unknown-linux-musl target (the static agent)
#   cargo:  vhost-device-vsock, pinned (the host side of hybrid vsock), and
#           cargo-fuzz, pinned (the fuzz targets of `make test`)
#   lkvm:   kvmtool, which has no Debian package, built (make lkvm-static)
#           from ../shared/vendor/kvmtool-b48735e.tar.gz beside the repo and
#           installed as /usr/local/bin/lkvm with the tarball's sha256 in
#           /usr/local/lib/kvmpod/lkvm.sha256, so it is rebuilt only when
#           the tarball changes; without the tarball, an lkvm on PATH
# Running it again changes nothing.
set -eu

VHOST_DEVICE_VSOCK_VERSION=${VHOST_DEVICE_VSOCK_VERSION:-0.3.0}
MUSL_TARGET=x86_64-unknown-linux-musl

say() { printf 'deps: %s\n' "$*"; }

missing=""
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing="$missing qemu-system-x86"
ls /boot/vmlinuz-* >/dev/null 2>&1 || missing="$missing linux-image-amd64"
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' \
    || missing="$missing busybox-static"
command -v file >/dev/null 2>&1 || missing="$missing file"
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing="$missing fonts-dejavu-core"
dpkg-query -W -f='${Status}' build-essential 2>/dev/null | grep -q 'ok installed' \
    || missing="$missing build-essential"
[ -x /usr/bin/docker-registry ] || missing="$missing docker-registry"
command -v skopeo >/dev/null 2>&1 || missing="$missing skopeo"
command -v containerd >/dev/null 2>&1 && command -v ctr >/dev/null 2>&1 || missing="$missing containerd"
command -v protoc >/dev/null 2>&1 || missing="$missing protobuf-compiler"
command -v passt >/dev/null 2>&1 || missing="$missing passt"
[ -x /usr/lib/cni/bridge ] || missing="$missing containernetworking-plugins"
command -v iperf3 >/dev/null 2>&1 || missing="$missing iperf3"
command -v tmux >/dev/null 2>&1 || missing="$missing tmux"

if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        say "missing Debian packages:$missing; run 'make deps' as root" >&2
        exit 1
    fi
    say "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
else
    say "Debian packages present"
fi

if rustup target list --installed 2>/dev/null | grep -qx "$MUSL_TARGET"; then
    say "rust target $MUSL_TARGET present"
else
    say "adding rust target $MUSL_TARGET"
    rustup target add "$MUSL_TARGET"
fi

cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
CARGO_FUZZ_VERSION=${CARGO_FUZZ_VERSION:-0.13.2}
if cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
    say "cargo-fuzz $CARGO_FUZZ_VERSION present"
else
    say "installing cargo-fuzz $CARGO_FUZZ_VERSION (cargo install)"
    cargo install --locked --force "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi
vdv=$(command -v vhost-device-vsock 2>/dev/null || echo "$cargo_bin/vhost-device-vsock")
if [ -x "$vdv" ] && "$vdv" --version 2>/dev/null | grep -q " $VHOST_DEVICE_VSOCK_VERSION\$"; then
    say "vhost-device-vsock $VHOST_DEVICE_VSOCK_VERSION present"
else
    say "installing vhost-device-vsock $VHOST_DEVICE_VSOCK_VERSION (cargo install)"
    cargo install --locked --force "vhost-device-vsock@$VHOST_DEVICE_VSOCK_VERSION"
fi

# lkvm (kvmtool), built from the tarball vendored beside the repository.
repo=$(cd "$(dirname "$0")/.." && pwd)
KVMTOOL_TARBALL=${KVMTOOL_TARBALL:-$(dirname "$repo")/shared/vendor/kvmtool-b48735e.tar.gz}
LKVM_BIN=/usr/local/bin/lkvm
LKVM_STAMP=/usr/local/lib/kvmpod/lkvm.sha256
if [ -f "$KVMTOOL_TARBALL" ]; then
    want=$(sha256sum "$KVMTOOL_TARBALL" | cut -d' ' -f1)
    if [ -x "$LKVM_BIN" ] && [ "$(cat "$LKVM_STAMP" 2>/dev/null)" = "$want" ]; then
        say "lkvm present ($LKVM_BIN, built from $(basename "$KVMTOOL_TARBALL"))"
    else
        if [ "$(id -u)" != 0 ]; then
            say "lkvm must be built from $KVMTOOL_TARBALL into $LKVM_BIN; run 'make deps' as root" >&2
            exit 1
        fi
        say "building lkvm from $KVMTOOL_TARBALL"
        build=$(mktemp -d /tmp/kvmpod-kvmtool.XXXXXX)
        trap 'rm -rf "$build"' EXIT
        tar xzf "$KVMTOOL_TARBALL" -C "$build"
        src=$(dirname "$(find "$build" -maxdepth 2 -name Makefile | head -n 1)")
        # The static build needs no shared libraries at run time (seconds to
        # build); the dynamic one is the fallback where static libc is absent.
        if make -C "$src" -j2 lkvm-static >"$build/make.log" 2>&1; then
            built=$src/lkvm-static
        elif make -C "$src" -j2 lkvm >>"$build/make.log" 2>&1; then
            built=$src/lkvm
        else
            tail -n 20 "$build/make.log" >&2
            say "building lkvm failed (the output's tail is above)" >&2
            exit 1
        fi
        install -D -m 0755 "$built" "$LKVM_BIN"
        mkdir -p "$(dirname "$LKVM_STAMP")"
        echo "$want" >"$LKVM_STAMP"
        say "installed $LKVM_BIN ($("$LKVM_BIN" version 2>/dev/null || echo "$(basename "$built")"))"
    fi
elif command -v lkvm >/dev/null 2>&1; then
    say "lkvm present ($(command -v lkvm)); no kvmtool source at $KVMTOOL_TARBALL"
else
    say "warning: no lkvm on PATH and no kvmtool source at $KVMTOOL_TARBALL: the lkvm backend and its tests are unavailable" >&2
fi
