//! The guest's vsock device, two ways:
//!
//! * the host kernel's vhost-vsock (`/dev/vhost-vsock`): QEMU's
//!   `vhost-vsock-pci`/`-device` or lkvm's `--vsock`, reached with AF_VSOCK
//!   at the guest's CID;
//! * *hybrid vsock*: vhost-device-vsock serves QEMU's
//!   `vhost-user-vsock-*` and gives the host a Unix socket (the protocol of
//!   Firecracker and Cloud Hypervisor).

use std::path::{Path, PathBuf};

use super::tools::{cargo_bin_dirs, find_program};
use super::VmmError;

/// `--vsock`: how the host reaches the guest.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum VsockMode {
    /// AF_VSOCK where /dev/vhost-vsock works, else hybrid.
    Auto,
    /// The host kernel's vhost-vsock (AF_VSOCK).
    Vhost,
    /// vhost-device-vsock's Unix socket.
    Hybrid,
}

/// The device a pod gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VsockKind {
    Vhost,
    Hybrid,
}

impl VsockKind {
    /// How users read it.
    pub fn describe(self) -> &'static str {
        match self {
            VsockKind::Vhost => "vhost (AF_VSOCK)",
            VsockKind::Hybrid => "hybrid (vhost-device-vsock)",
        }
    }
}

/// The host's vhost-vsock device.
pub const VHOST_VSOCK_DEV: &str = "/dev/vhost-vsock";

/// Picks the device for `mode`, and says why; `dev` is
/// [`VHOST_VSOCK_DEV`].
pub fn choose(mode: VsockMode, dev: &Path) -> Result<(VsockKind, String), VmmError> {
    let usable = std::fs::OpenOptions::new().read(true).write(true).open(dev);
    match (mode, usable) {
        (VsockMode::Hybrid, _) => Ok((VsockKind::Hybrid, "--vsock hybrid".into())),
        (VsockMode::Vhost, Ok(_)) => Ok((VsockKind::Vhost, "--vsock vhost".into())),
        (VsockMode::Vhost, Err(e)) => Err(VmmError::Unavailable(format!(
            "--vsock vhost: {}: {e} (load the vhost_vsock module, or use --vsock hybrid)",
            dev.display()
        ))),
        (VsockMode::Auto, Ok(_)) => Ok((VsockKind::Vhost, format!("{} works", dev.display()))),
        (VsockMode::Auto, Err(e)) => Ok((VsockKind::Hybrid, format!("{}: {e}", dev.display()))),
    }
}

/// The vhost-user vsock backend, for hybrid vsock.
pub fn vhost_device_vsock() -> Result<PathBuf, VmmError> {
    find_program(
        "KVMPOD_VHOST_VSOCK",
        "vhost-device-vsock",
        "the vhost-user vsock backend",
        &cargo_bin_dirs(),
    )
}

/// vhost-device-vsock's arguments: the guest's CID, the vhost-user socket
/// the hypervisor connects to, and the hybrid socket the host uses.
pub fn vhost_device_vsock_args(cid: u32, vhost_socket: &Path, hybrid_socket: &Path) -> Vec<String> {
    vec![
        "--vm".to_string(),
        format!(
            "guest-cid={cid},socket={},uds-path={}",
            vhost_socket.display(),
            hybrid_socket.display()
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_picks_its_device() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in for a usable /dev/vhost-vsock: a file that opens.
        let works = dir.path().join("vhost-vsock");
        std::fs::write(&works, b"").unwrap();
        let missing = dir.path().join("none");
        let kind = |mode, dev: &Path| choose(mode, dev).map(|(k, _)| k);
        assert_eq!(kind(VsockMode::Hybrid, &works).unwrap(), VsockKind::Hybrid);
        assert_eq!(
            kind(VsockMode::Hybrid, &missing).unwrap(),
            VsockKind::Hybrid
        );
        assert_eq!(kind(VsockMode::Vhost, &works).unwrap(), VsockKind::Vhost);
        assert_eq!(kind(VsockMode::Auto, &works).unwrap(), VsockKind::Vhost);
        assert_eq!(kind(VsockMode::Auto, &missing).unwrap(), VsockKind::Hybrid);
        let e = choose(VsockMode::Vhost, &missing).unwrap_err().to_string();
        assert!(e.contains("or use --vsock hybrid"), "{e}");
    }
}
