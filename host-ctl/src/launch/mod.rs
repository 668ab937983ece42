//! From a manifest and the host to a pod ready to boot.
//!
//! [`plan`] works out everything a pod needs without creating anything
//! (`host-ctl args` prints its result); [`prepare`] then creates the pod's
//! directory and record, leases its CID, builds its initramfs, mounts any
//! share aliases and writes `launch.json`. It runs in the `run` process, so
//! every error is reported where the user is.

mod draft;
pub mod host;
mod initramfs;
mod prepare;

use std::path::PathBuf;
use std::time::Duration;

use kvmpod_api::manifest::PodManifest;

use crate::logs::Rotation;
use crate::pod::{PodDir, PodError, VmLaunch};
use crate::vmm::accel::AccelRequest;
use crate::vmm::vsock::VsockMode;
use crate::vmm::{Alias, HypervisorKind, VmmError};

pub use draft::plan;
pub use initramfs::needed_modules;
pub use prepare::prepare;

/// What the user asked for (`host-ctl run` and `args`).
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub manifest: PathBuf,
    pub state_dir: PathBuf,
    pub kernel: Option<PathBuf>,
    pub modules_dir: Option<PathBuf>,
    pub agent: Option<PathBuf>,
    pub accel: AccelRequest,
    pub hypervisor: HypervisorKind,
    pub vsock: VsockMode,
    pub memory_mib: u32,
    pub cpus: u32,
    pub boot_timeout: Duration,
    pub grace: Duration,
    pub linger: Duration,
    pub debug: bool,
    /// Gzip the initramfs (see `host-ctl run --help`).
    pub gzip_initramfs: bool,
    pub detach: bool,
    /// How big each app's log files may grow.
    pub log_rotation: Rotation,
}

/// Everything a pod needs, worked out before anything is created.
pub struct PodPlan {
    pub dir: PodDir,
    pub pod: PodManifest,
    pub agent: PathBuf,
    pub kernel: host::Kernel,
    pub launch: VmLaunch,
    pub aliases: Vec<Alias>,
    pub cid: u32,
    /// The guest driver of the VM's virtio transport (a kernel module).
    pub transport: &'static str,
    /// What was chosen and why, for the user.
    pub notes: Vec<String>,
}

/// Why a pod cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The manifest is unreadable or invalid (every problem listed).
    #[error(transparent)]
    Manifest(Box<kvmpod_api::validate::ManifestError>),
    /// The agent binary or the guest kernel is missing or unusable.
    #[error("{0}")]
    Host(String),
    #[error("{what}")]
    Initramfs {
        what: &'static str,
        #[source]
        source: Box<rootfs_builder::initramfs::BuildError>,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Vmm(#[from] VmmError),
    #[error(transparent)]
    Pod(#[from] PodError),
}

impl From<kvmpod_api::validate::ManifestError> for LaunchError {
    fn from(e: kvmpod_api::validate::ManifestError) -> Self {
        LaunchError::Manifest(Box::new(e))
    }
}
