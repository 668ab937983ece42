//! `<state>/pool/pool.json`: how many VMs the pool keeps, and their shape
//! (what `run` would be given to boot them).

use std::path::{Path, PathBuf};

use kvmpod_api::network::Network;
use serde::{Deserialize, Serialize};

use super::{io, PoolError};
use crate::launch::{PodSource, RunOptions, VmOrigin};
use crate::ui::notes::Verbosity;
use crate::vmm::accel::AccelRequest;
use crate::vmm::vsock::VsockMode;
use crate::vmm::HypervisorKind;

/// `<state>/pool`.
pub fn pool_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("pool")
}

fn spec_file(state_dir: &Path) -> PathBuf {
    pool_dir(state_dir).join("pool.json")
}

/// What the pool keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpec {
    pub size: u32,
    pub hypervisor: HypervisorKind,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: AccelRequest,
    pub vsock: VsockMode,
    /// The members' network; `None`: what a pod that does not choose gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage1: Option<String>,
    #[serde(default)]
    pub debug: bool,
    /// Seconds a member may take to boot to its waiting agent.
    pub boot_timeout_secs: u64,
}

impl PoolSpec {
    /// The pool's, if it has one.
    pub fn read(state_dir: &Path) -> Result<Option<PoolSpec>, PoolError> {
        let path = spec_file(state_dir);
        match std::fs::read(&path) {
            Ok(text) => serde_json::from_slice(&text)
                .map(Some)
                .map_err(|source| PoolError::BadFile { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading", &path)(e)),
        }
    }

    /// Writes it whole (a rename), creating the pool's directory.
    pub fn write(&self, state_dir: &Path) -> Result<(), PoolError> {
        let dir = pool_dir(state_dir);
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        let path = spec_file(state_dir);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).map_err(|source| PoolError::BadFile {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, text).map_err(io("writing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("writing", &path))
    }

    /// Removes it: fills stop, and nothing is claimed any more.
    pub fn remove(state_dir: &Path) -> Result<bool, PoolError> {
        let path = spec_file(state_dir);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io("removing", &path)(e)),
        }
    }

    /// What a member is booted with: no pod, in the pooled layout.
    pub fn member_options(&self, state_dir: &Path) -> RunOptions {
        RunOptions {
            kernel: self.kernel.clone(),
            modules_dir: self.modules_dir.clone(),
            agent: self.agent.clone(),
            accel: self.accel,
            hypervisor: self.hypervisor,
            vsock: self.vsock,
            memory_mib: self.memory_mib,
            cpus: self.cpus,
            boot_timeout: std::time::Duration::from_secs(self.boot_timeout_secs),
            debug: self.debug,
            stage1: self.stage1.clone(),
            detach: true,
            network: self.network.clone(),
            origin: VmOrigin::Pooled,
            // Its choices are the pod's to say, when it claims the VM.
            verbosity: Verbosity::Quiet,
            ..RunOptions::new(PodSource::PoolMember, state_dir.to_path_buf())
        }
    }

    /// Why the pool cannot run on `hypervisor`, if it cannot.
    pub fn check(&self) -> Result<(), PoolError> {
        if self.hypervisor != HypervisorKind::Qemu {
            return Err(PoolError::Invalid(
                "the warm pool runs QEMU VMs only: lkvm runs in a mount namespace of its own (its jail), so a pod's layers and volumes bound into its shares after boot would not reach it".into(),
            ));
        }
        if self.size == 0 || self.size > 64 {
            return Err(PoolError::Invalid(format!(
                "a pool of {} VMs: give 1 to 64",
                self.size
            )));
        }
        Ok(())
    }
}
