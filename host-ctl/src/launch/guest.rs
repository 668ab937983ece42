//! The pod's share, `<pod>/guest/`: what the guest is told about the pod
//! (the agent's settings and the validated manifest) and the app roots'
//! read-only layers, each a read-only bind mount at `roots/<n>`. It is the
//! only thing per pod the guest gets; nothing in it grows with an image.

use std::fs;
use std::path::Path;

use kvmpod_api::config::AgentConfig;
use kvmpod_api::layout;

use super::{LaunchError, PodPlan, RunOptions, VmOrigin};
use crate::pod::{apps_share, PodDir, PodError};
use crate::vmm::{self, Alias};

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
        app_roots: plan.roots.apps.clone(),
        network: plan.guest_net.clone(),
        volumes_share: o.origin == VmOrigin::Pooled,
        ..AgentConfig::default()
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), LaunchError> {
    let text = serde_json::to_vec_pretty(value).map_err(|source| PodError::BadFile {
        path: path.to_path_buf(),
        source,
    })?;
    fs::write(path, text).map_err(|source| LaunchError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The read-only bind mounts of the pod's layers.
pub(super) fn layer_aliases(plan: &PodPlan) -> Vec<Alias> {
    plan.roots
        .layers
        .iter()
        .enumerate()
        .map(|(n, source)| Alias {
            source: source.clone(),
            path: plan.dir.guest_roots().join(n.to_string()),
            read_only: true,
        })
        .collect()
}

/// Writes the share's files and mounts its layers.
pub(super) fn create(o: &RunOptions, plan: &PodPlan) -> Result<(), LaunchError> {
    let dir: &PodDir = &plan.dir;
    let guest = dir.guest_dir();
    fs::create_dir_all(&guest).map_err(|source| LaunchError::Write {
        path: guest.clone(),
        source,
    })?;
    write_json(
        &guest.join(layout::AGENT_CONFIG_FILE),
        &agent_config(o, plan),
    )?;
    write_json(&dir.manifest(), &plan.pod)?;
    vmm::mount_aliases(&layer_aliases(plan))?;
    if plan.pod.sandbox {
        apps_share::create(dir)?;
    }
    Ok(())
}
