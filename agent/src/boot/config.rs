//! What the host put into the initramfs for the agent: its settings and the
//! pod manifest, validated again in the guest.

use std::fs;

use kvmpod_api::config::AgentConfig;
use kvmpod_api::layout;
use kvmpod_api::manifest::PodManifest;

use super::BootError;

pub(super) fn read_config() -> Result<AgentConfig, BootError> {
    let path = layout::AGENT_CONFIG;
    let text = fs::read(path).map_err(|source| BootError::Read { path, source })?;
    serde_json::from_slice(&text).map_err(|source| BootError::Config { path, source })
}

pub(super) fn read_manifest() -> Result<PodManifest, BootError> {
    let path = layout::MANIFEST;
    let text = fs::read_to_string(path).map_err(|source| BootError::Read { path, source })?;
    let pod =
        kvmpod_api::validate::parse(&text).map_err(|error| BootError::Manifest { path, error })?;
    if let Some(first) = kvmpod_api::validate::validate(&pod).into_iter().next() {
        return Err(BootError::Manifest { path, error: first });
    }
    Ok(pod)
}
