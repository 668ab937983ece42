//! The agent's settings, written by host-ctl into the initramfs.
//!
//! Kernel parameters with a `.` are not passed to init and the rest mix with
//! the kernel's own, so the agent takes its settings from a file instead.

use serde::{Deserialize, Serialize};

use crate::layout::DEFAULT_VSOCK_PORT;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// The vsock port the agent serves ttrpc on.
    #[serde(default = "default_port")]
    pub vsock_port: u32,
    /// Kernel modules to load, dependencies first, as guest paths.
    #[serde(default)]
    pub modules: Vec<String>,
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
    /// How the agent ends the VM so that the hypervisor exits.
    #[serde(default)]
    pub vm_end: VmEnd,
}

/// How the guest ends its VM. QEMU's machines have ACPI: a power-off ends
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
            modules: Vec::new(),
            linger_secs: default_linger(),
            grace_ms: default_grace(),
            ninep_msize: default_msize(),
            log_buffer_bytes: default_log_buffer(),
            debug: false,
            hostname: default_hostname(),
            vm_end: VmEnd::default(),
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
}
