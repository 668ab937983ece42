//! The agent's settings: the stage1 image's own ([`Stage1Config`], in the
//! initramfs) and the pod's ([`AgentConfig`], in the pod's share).
//!
//! Kernel parameters with a `.` are not passed to init and the rest mix with
//! the kernel's own, so the agent takes its settings from files instead.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::layout::DEFAULT_VSOCK_PORT;
use crate::network::GuestNetwork;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// The vsock port the agent serves ttrpc on.
    #[serde(default = "default_port")]
    pub vsock_port: u32,
    /// Each app's root: its read-only layers, by their number in the
    /// pod share's `roots/`, top first. The agent stacks them with
    /// overlayfs under a writable tmpfs layer of the app's own.
    #[serde(default)]
    pub app_roots: BTreeMap<String, Vec<usize>>,
    /// How long the agent waits, after every app has exited, for the host to
    /// collect the status and ask for shutdown before it powers off alone.
    #[serde(default = "default_linger")]
    pub linger_secs: u64,
    /// Grace period between SIGTERM and SIGKILL when the host gives none.
    #[serde(default = "default_grace")]
    pub grace_ms: u32,
    /// 9p `msize`: larger is faster; the virtio transport caps it at 512000.
    #[serde(default = "default_msize")]
    pub ninep_msize: u32,
    /// Per-app buffer of output the host has not yet acknowledged, in
    /// bytes: a blocking app waits when it is full, so it bounds guest
    /// memory; larger keeps the stream flowing while acknowledgements are
    /// in flight (8 MiB streams at about 0.87 of raw vsock under TCG,
    /// 1 MiB at 0.61).
    #[serde(default = "default_log_buffer")]
    pub log_buffer_bytes: u64,
    /// Print debug lines on the console.
    #[serde(default)]
    pub debug: bool,
    /// The guest's hostname (the manifest's, or one host-ctl derived).
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// Host volumes come from one share, each under its 9p tag's name (a
    /// VM from the warm pool, booted before its pod's volumes were known),
    /// rather than from a 9p device each.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub volumes_share: bool,
    /// The guest's interface to configure; `None`: loopback only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<GuestNetwork>,
}

/// How the guest ends its VM (the kernel command line's
/// [`crate::layout::VM_END_ENV`]: the agent needs it before it can read
/// anything else). QEMU's machines have ACPI: a power-off ends
/// QEMU. kvmtool on x86 has no ACPI, so a power-off only halts the guest
/// and lkvm never exits; a reboot (`reboot=k`, the keyboard controller)
/// makes it exit ("KVM session ended normally").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmEnd {
    #[default]
    PowerOff,
    Reboot,
}

/// What the stage1 image says about itself: the kernel modules it holds,
/// in load order (dependencies first, as guest paths), for each virtio
/// transport a VM may have. The VM's transport comes from the kernel
/// command line ([`crate::layout::TRANSPORT_ENV`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Stage1Config {
    /// The kernel release the modules are for.
    pub kernel: String,
    pub modules: BTreeMap<String, Vec<String>>,
}

impl VmEnd {
    /// The value of [`crate::layout::VM_END_ENV`] for this way of ending.
    pub fn param(self) -> &'static str {
        match self {
            VmEnd::PowerOff => "poweroff",
            VmEnd::Reboot => "reboot",
        }
    }

    /// The way of ending named by `param` (power-off for anything else).
    pub fn from_param(param: &str) -> VmEnd {
        if param == "reboot" {
            VmEnd::Reboot
        } else {
            VmEnd::PowerOff
        }
    }
}

fn default_port() -> u32 {
    DEFAULT_VSOCK_PORT
}
fn default_linger() -> u64 {
    300
}
fn default_grace() -> u32 {
    10_000
}
fn default_msize() -> u32 {
    512_000
}
fn default_log_buffer() -> u64 {
    8 << 20
}
fn default_hostname() -> String {
    "kvmpod".into()
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            vsock_port: default_port(),
            app_roots: BTreeMap::new(),
            linger_secs: default_linger(),
            grace_ms: default_grace(),
            ninep_msize: default_msize(),
            log_buffer_bytes: default_log_buffer(),
            debug: false,
            hostname: default_hostname(),
            volumes_share: false,
            network: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_takes_defaults() {
        let c: AgentConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, AgentConfig::default());
        assert_eq!(c.vsock_port, 1024);
    }

    #[test]
    fn vm_end_round_trips_through_its_kernel_parameter() {
        for end in [VmEnd::PowerOff, VmEnd::Reboot] {
            assert_eq!(VmEnd::from_param(end.param()), end);
        }
        assert_eq!(VmEnd::from_param("nonsense"), VmEnd::PowerOff);
    }
}
