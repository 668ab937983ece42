//! What the agent is told: the stage1 image's settings (from the
//! initramfs), the VM's transport and way of ending (from the kernel
//! command line), and the pod's settings and manifest (from the pod's
//! share), the manifest validated again in the guest.

use std::fs;
use std::path::Path;

use kvmpod_api::config::{AgentConfig, Stage1Config, VmEnd};
use kvmpod_api::layout;
use kvmpod_api::manifest::PodManifest;

use super::BootError;

/// The initramfs's own settings.
pub(super) fn read_stage1() -> Result<Stage1Config, BootError> {
    read_json(Path::new(layout::STAGE1_CONFIG))
}

/// The VM's virtio transport module, as the host put it on the kernel
/// command line.
pub(super) fn transport() -> Result<String, BootError> {
    std::env::var(layout::TRANSPORT_ENV).map_err(|_| BootError::NoParam(layout::TRANSPORT_ENV))
}

/// Whether the VM has a network interface whose driver must be loaded.
pub(super) fn has_network() -> bool {
    std::env::var(layout::NET_ENV).is_ok_and(|v| v == "1")
}

/// How the host wants the VM ended (a power-off unless it says reboot).
pub(super) fn vm_end() -> VmEnd {
    VmEnd::from_param(&std::env::var(layout::VM_END_ENV).unwrap_or_default())
}

/// The kernel modules the stage1 image holds for `transport`, in order.
pub(super) fn modules_for<'a>(
    stage1: &'a Stage1Config,
    transport: &str,
) -> Result<&'a [String], BootError> {
    stage1
        .modules
        .get(transport)
        .map(Vec::as_slice)
        .ok_or_else(|| BootError::NoTransport(transport.to_string()))
}

/// The pod's settings, from its share.
pub(super) fn read_config() -> Result<AgentConfig, BootError> {
    read_json(&layout::in_pod_share(layout::AGENT_CONFIG_FILE))
}

/// The pod's manifest, from its share, validated.
pub(super) fn read_manifest() -> Result<PodManifest, BootError> {
    let path = layout::in_pod_share(layout::MANIFEST_FILE);
    let text = fs::read_to_string(&path).map_err(|source| BootError::Read {
        path: path.clone(),
        source,
    })?;
    let pod = kvmpod_api::validate::parse(&text).map_err(|error| BootError::Manifest {
        path: path.clone(),
        error,
    })?;
    if let Some(first) = kvmpod_api::validate::validate(&pod).into_iter().next() {
        return Err(BootError::Manifest { path, error: first });
    }
    Ok(pod)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, BootError> {
    let text = fs::read(path).map_err(|source| BootError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| BootError::Config {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transport_the_image_lacks_is_named() {
        let mut s = Stage1Config::default();
        s.modules
            .insert("virtio_mmio".into(), vec!["/lib/modules/x.ko".into()]);
        assert_eq!(modules_for(&s, "virtio_mmio").unwrap().len(), 1);
        let e = modules_for(&s, "virtio_pci").unwrap_err().to_string();
        assert!(e.contains("virtio_pci"), "{e}");
    }
}
