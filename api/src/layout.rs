//! Where things live in the guest, and what host-ctl and the agent call
//! the things they exchange. The stage1 image (built once per agent and
//! kernel) holds the agent and the kernel modules; everything per pod comes
//! through the pod's own read-only 9p share, so nothing per pod is copied.

use std::path::PathBuf;

/// The agent, started by the kernel as PID 1 (the initramfs default `rdinit`).
pub const INIT: &str = "/init";
/// The stage1 image's own settings ([`crate::config::Stage1Config`]).
pub const STAGE1_CONFIG: &str = "/etc/kvmpod/stage1.json";
/// The 9p tag of the pod's share: its settings, manifest and app roots.
pub const POD_SHARE_TAG: &str = "kvmpod";
/// Where the agent mounts the pod's share (read-only).
pub const POD_SHARE_DIR: &str = "/run/kvmpod/pod";
/// The 9p tag of a sandbox pod's apps share (`"sandbox": true`): what the
/// host binds in for each app added while the pod runs, under `<app>/`.
pub const APPS_SHARE_TAG: &str = "kvmpod-apps";
/// Where the agent mounts the apps share.
pub const APPS_SHARE_DIR: &str = "/run/kvmpod/apps";
/// The agent's settings for the pod ([`crate::config::AgentConfig`]), in
/// the pod's share.
pub const AGENT_CONFIG_FILE: &str = "agent.json";
/// The manifest, as validated (and with host paths resolved) by host-ctl,
/// in the pod's share.
pub const MANIFEST_FILE: &str = "pod.json";
/// The directory of the pod's share that holds the app roots' read-only
/// layers, one numbered directory each.
pub const ROOTS_DIR: &str = "roots";
/// Where each app's writable layer lives in the guest (a tmpfs).
pub const UPPER_DIR: &str = "/run/kvmpod/upper";
/// Kernel parameters the agent reads from its environment (the kernel
/// passes `name=value` parameters without a dot to init that way): the
/// VM's virtio transport module, and how the VM ends (see
/// [`crate::config::VmEnd`]). Both are needed before the pod's share can
/// be read.
pub const TRANSPORT_ENV: &str = "kvmpod_transport";
pub const VM_END_ENV: &str = "kvmpod_end";
/// Set (`kvmpod_net=1`) when the VM has a network interface: its driver is
/// loaded with the transport's modules, from the initramfs.
pub const NET_ENV: &str = "kvmpod_net";
/// Set (`kvmpod_pool=1`) when the VM is booted for the warm pool, before
/// it has a pod: the agent waits for a claim (see [`crate::pool`]) before
/// it reads the pod's share.
pub const POOL_ENV: &str = "kvmpod_pool";
/// The 9p tag of a pooled VM's volumes share: the host binds each host
/// volume in under its 9p tag's name when a pod claims the VM, as a VM
/// cannot be given new 9p devices after boot.
pub const POOL_VOLUMES_TAG: &str = "kvmpod-volumes";
/// Where the agent mounts the pooled VM's volumes share.
pub const POOL_VOLUMES_DIR: &str = "/run/kvmpod/volumes";
/// The key of the stage1 image's module list for a pod with a network
/// interface (beside one per virtio transport): loaded only by such pods.
pub const NET_MODULES_KEY: &str = "net";
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
/// The vsock port a pooled VM's agent waits on for its pod (see
/// [`crate::pool`]); closed once claimed.
pub const CLAIM_VSOCK_PORT: u32 = 1028;
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

/// The guest path of the pod share's file or directory `name`.
pub fn in_pod_share(name: &str) -> PathBuf {
    PathBuf::from(POD_SHARE_DIR).join(name)
}

/// The guest path of read-only layer `n` of the pod's share.
pub fn root_layer(n: usize) -> PathBuf {
    PathBuf::from(POD_SHARE_DIR)
        .join(ROOTS_DIR)
        .join(n.to_string())
}

/// An added app's directory in the apps share (relative): its root's
/// layers are `<app>/layers/<n>`, top first from 0, and its own host
/// volumes `<app>/volumes/<volume>`.
pub fn added_app_dir(app: &str) -> PathBuf {
    PathBuf::from(app)
}

/// Read-only layer `n` (0 is the top) of added app `app`'s root, relative
/// to the apps share.
pub fn added_app_layer(app: &str, n: usize) -> PathBuf {
    added_app_dir(app).join("layers").join(n.to_string())
}

/// Host volume `volume` of added app `app`, relative to the apps share.
pub fn added_app_volume(app: &str, volume: &str) -> PathBuf {
    added_app_dir(app).join("volumes").join(volume)
}

/// Path of the initramfs entry for `guest_path` (no leading `/`).
pub fn archive_path(guest_path: &str) -> &str {
    guest_path.trim_start_matches('/')
}
