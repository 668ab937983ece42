//! The pod's boot image: the agent, its settings, the validated manifest,
//! the kernel modules the VM's devices need and the app roots, as one
//! initramfs in the pod's directory.

use kvmpod_api::config::AgentConfig;
use kvmpod_api::manifest::{PodManifest, VolumeKind};
use rootfs_builder::{build_archive, write_initramfs, Compression, InitramfsSpec, KernelModules};

use super::{LaunchError, PodPlan, RunOptions};

/// The kernel modules a pod needs, before their dependencies: the VM's
/// virtio transport, vsock, and 9p when it has host volumes.
pub fn needed_modules(pod: &PodManifest, transport: &str) -> Vec<String> {
    let mut m = vec![
        transport.to_string(),
        "vmw_vsock_virtio_transport".to_string(),
    ];
    if pod.volumes.iter().any(|v| v.kind == VolumeKind::Host) {
        m.push("9pnet_virtio".into());
        m.push("9p".into());
    }
    m
}

/// The agent's settings for the pod.
fn agent_config(o: &RunOptions, plan: &PodPlan) -> AgentConfig {
    AgentConfig {
        hostname: plan
            .pod
            .hostname
            .clone()
            .unwrap_or_else(|| plan.dir.id.chars().take(12).collect()),
        linger_secs: o.linger.as_secs(),
        grace_ms: plan.launch.grace_ms,
        debug: o.debug,
        vm_end: crate::vmm::hypervisor(o.hypervisor).vm_end(),
        ..AgentConfig::default()
    }
}

/// Builds and writes the pod's initramfs; returns its size in bytes.
pub(super) fn build(o: &RunOptions, plan: &PodPlan) -> Result<u64, LaunchError> {
    let spec = InitramfsSpec {
        agent: plan.agent.clone(),
        manifest: plan.pod.clone(),
        config: agent_config(o, plan),
        modules: plan.kernel.modules.as_ref().map(|d| KernelModules {
            dir: d.clone(),
            wanted: needed_modules(&plan.pod, plan.transport),
        }),
    };
    let archive = build_archive(&spec).map_err(|source| LaunchError::Initramfs {
        what: "building the initramfs",
        source: Box::new(source),
    })?;
    // Uncompressed by default: measured on TCG, gzip costs ~0.35 s to
    // build and ~0.17 s of guest boot to unpack (`make bench`).
    let compression = if o.gzip_initramfs {
        Compression::Gzip
    } else {
        Compression::None
    };
    write_initramfs(&archive, &plan.dir.initramfs(), compression).map_err(|source| {
        LaunchError::Initramfs {
            what: "writing the initramfs",
            source: Box::new(source),
        }
    })
}
