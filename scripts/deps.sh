#!/bin/sh
# Installs what kvmpod needs on a Debian host, and only what is missing:
#   apt:    qemu-system-x86 (QEMU), linux-image-amd64 (the guest kernel and
#           its modules), busybox-static (the examples' app roots), file,
#           fonts-dejavu-core (the benchmark's chart)
#   rustup: the x86_64-unknown-linux-musl target (the static agent)
#   cargo:  vhost-device-vsock, pinned (the host side of hybrid vsock), and
#           cargo-fuzz, pinned (the fuzz targets of `make test`)
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
