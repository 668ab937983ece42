//! Where things live in the guest. host-ctl and rootfs-builder write these
//! paths into the initramfs; the agent reads them.

use std::path::PathBuf;

/// The agent, started by the kernel as PID 1 (the initramfs default `rdinit`).
pub const INIT: &str = "/init";
/// The manifest, as validated (and with host paths resolved) by host-ctl.
pub const MANIFEST: &str = "/etc/kvmpod/pod.json";
/// The agent's own settings ([`crate::config::AgentConfig`]).
pub const AGENT_CONFIG: &str = "/etc/kvmpod/agent.json";
/// Where kernel modules are copied, under `<kernel version>/`.
pub const MODULES_DIR: &str = "/lib/modules";
/// Each volume's guest directory: `/mnt/<volume>`.
pub const VOLUMES_DIR: &str = "/mnt";
/// Each app's directory: `/opt/stage2/<app>/rootfs` is its root.
pub const STAGE2_DIR: &str = "/opt/stage2";

/// The agent's vsock port, unless the host asks for another.
pub const DEFAULT_VSOCK_PORT: u32 = 1024;
/// The agent's port-forwarding vsock port: a connection there sends
/// `TCP <guest port>\n`, gets `OK\n` (or `ERR <why>\n`) and then carries
/// the bytes of a TCP connection to that port on the guest's loopback.
pub const FORWARD_VSOCK_PORT: u32 = 1025;
/// The agent's log stream vsock port: see [`crate::logstream`].
pub const LOG_VSOCK_PORT: u32 = 1026;
/// The agent's io stream vsock port (`exec`, `attach`): see
/// [`crate::iostream`].
pub const IO_VSOCK_PORT: u32 = 1027;
/// The guest's cgroup v2 hierarchy; each app gets `<root>/app-<name>`.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// `/mnt/<volume>`.
pub fn volume_dir(volume: &str) -> PathBuf {
    PathBuf::from(VOLUMES_DIR).join(volume)
}

/// `/opt/stage2/<app>/rootfs`, the app's root in the guest.
pub fn app_rootfs(app: &str) -> PathBuf {
    PathBuf::from(STAGE2_DIR).join(app).join("rootfs")
}

/// Path of the initramfs entry for `guest_path` (no leading `/`).
pub fn archive_path(guest_path: &str) -> &str {
    guest_path.trim_start_matches('/')
}
