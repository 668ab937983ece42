//! The built programs and host tools the boot tests need. A missing one is
//! a failure that says how to fix it (`make deps`, `make build`), never a
//! quiet skip.

use std::fs;
use std::path::{Path, PathBuf};

use crate::repo;

fn on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.iter().any(|d| d.join(name).is_file())
}

/// The built programs the tests run.
pub struct Programs {
    pub host_ctl: PathBuf,
    pub agent: PathBuf,
    /// containerd-shim-kvmpod-v2 (checked by the tests that use it).
    pub shim: PathBuf,
}

fn built(var: &str, default: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(p) => PathBuf::from(p),
        None => repo().join(default),
    }
}

/// Checks every prerequisite of a boot test and returns the programs.
/// Panics with the command that fixes what is missing.
pub fn programs() -> Programs {
    let mut missing = Vec::new();
    if !on_path("qemu-system-x86_64") {
        missing.push("qemu-system-x86_64 (Debian package qemu-system-x86)");
    }
    if !on_path("vhost-device-vsock") {
        missing.push("vhost-device-vsock (cargo install)");
    }
    let has_kernel = fs::read_dir("/boot")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
        })
        .unwrap_or(false);
    if !has_kernel {
        missing.push("a guest kernel in /boot (Debian package linux-image-amd64)");
    }
    if !Path::new("/bin/busybox").is_file() {
        missing.push("/bin/busybox (Debian package busybox-static)");
    }
    assert!(
        missing.is_empty(),
        "boot test prerequisites missing: {}; run `make deps` as root",
        missing.join(", ")
    );
    let p = Programs {
        host_ctl: built("KVMPOD_HOST_CTL", "target/release/host-ctl"),
        agent: built(
            "KVMPOD_AGENT",
            "target/x86_64-unknown-linux-musl/agent/kvmpod-agent",
        ),
        shim: built("KVMPOD_SHIM", "target/release/containerd-shim-kvmpod-v2"),
    };
    for bin in [&p.host_ctl, &p.agent] {
        assert!(
            bin.is_file(),
            "{} is not built; run `make build` (or `make test`, which builds first)",
            bin.display()
        );
    }
    p
}
