//! `<pod dir>/launch.json`: how to start a prepared pod's VM. `host-ctl
//! run` works it out and writes it; the monitor (maybe a detached process
//! started later, or one adopting the VM) reads it.

use std::fs;
use std::path::PathBuf;

use kvmpod_api::network::PortMapping;

use crate::vmm::tapns::TapWiring;

use serde::{Deserialize, Serialize};

use super::dir::PodDir;
use super::PodError;
use crate::agent::Endpoint;
use crate::logs::Rotation;
use crate::vmm::{
    hypervisor, Accel, Backend, HypervisorKind, Program, VmLogs, VmProcesses, VmmError,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmLaunch {
    pub hypervisor: HypervisorKind,
    pub vm: Program,
    /// The vhost-user vsock backend, for hybrid vsock.
    pub vsock_backend: Option<Program>,
    /// The user-mode network process (passt), for QEMU's user networking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_backend: Option<Program>,
    /// The socket passt serves, which the hypervisor connects to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_backend_socket: Option<PathBuf>,
    /// The network namespace the hypervisor runs in (lkvm's user-mode
    /// network, or a tap in a CNI namespace); `None`: the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    /// Ports the monitor publishes itself, relaying over vsock (for a
    /// user-mode network that takes no inbound connections: lkvm's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relayed_ports: Vec<PortMapping>,
    /// The CNI namespace's interface bridged to the VM, unwired when the
    /// pod is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap_wiring: Option<TapWiring>,
    pub endpoint: Endpoint,
    pub boot_timeout_secs: u64,
    pub grace_ms: u32,
    pub accel: Accel,
    /// The host's TSC rate the guest was told (see `vmm::qemu::tsc`): a
    /// pod claiming this VM plans with it, so that its command line is
    /// this one's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsc_khz: Option<u64>,
    /// How big the apps' log files may grow (`run --log-max-size`,
    /// `--log-max-files`); pods from before rotation get the defaults.
    #[serde(default)]
    pub log_rotation: Rotation,
}

impl VmLaunch {
    pub fn read(dir: &PodDir) -> Result<Self, PodError> {
        let path = dir.launch();
        let text = fs::read(&path).map_err(|source| PodError::Io {
            what: "reading",
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| PodError::BadFile { path, source })
    }

    pub fn write(&self, dir: &PodDir) -> Result<(), PodError> {
        let path = dir.launch();
        let text = serde_json::to_vec_pretty(self).map_err(|source| PodError::BadFile {
            path: path.clone(),
            source,
        })?;
        fs::write(&path, text).map_err(|source| PodError::Io {
            what: "writing",
            path,
            source,
        })
    }

    /// Where the VM's processes write their output.
    pub fn logs(&self, dir: &PodDir) -> VmLogs {
        VmLogs {
            vm: dir.vm_log(self.hypervisor),
            vsock_backend: dir.vhost_log(),
            net_backend: dir.net_log(),
        }
    }

    /// Starts the vsock backend (for hybrid vsock) and the network backend
    /// (passt), then the hypervisor.
    pub async fn start(
        &self,
        dir: &PodDir,
        die_with_parent: bool,
    ) -> Result<VmProcesses, VmmError> {
        let socket = dir.vhost_socket();
        VmProcesses::start(
            (hypervisor(self.hypervisor).display_name(), &self.vm),
            self.vsock_backend.as_ref().map(|program| Backend {
                program,
                socket: Some(&socket),
            }),
            self.net_backend.as_ref().map(|program| Backend {
                program,
                socket: self.net_backend_socket.as_deref(),
            }),
            &self.logs(dir),
            die_with_parent,
            self.netns.as_deref(),
        )
        .await
    }
}
