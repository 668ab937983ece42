//! From a manifest and the host to a pod ready to boot.
//!
//! [`plan`] works out everything a pod needs without creating anything
//! (`host-ctl args` prints its result); [`prepare`] then creates the pod's
//! directory and record, leases its CID, finds (or builds once) the stage1
//! image, writes the pod's share and mounts its layers and any share
//! aliases, and writes `launch.json`. It runs in the `run` process, so
//! every error is reported where the user is.

pub mod added;
mod defaults;
mod draft;
mod guest;
pub mod host;
pub mod image_run;
mod netplan;
pub mod network;
pub mod pooled;
mod prepare;
pub mod roots;
mod tap;

use std::path::PathBuf;
use std::time::Duration;

use kvmpod_api::manifest::PodManifest;
use kvmpod_api::network::{GuestNetwork, Network, PortMapping};

use crate::image::ImageError;
use crate::logs::Rotation;
use crate::pod::{PodDir, PodError, VmLaunch};
use crate::stage1::{Stage1, Stage1Error};
use crate::ui::notes::{Notes, Verbosity};
use crate::vmm::accel::AccelRequest;
use crate::vmm::vsock::VsockMode;
use crate::vmm::{Alias, HypervisorKind, VmmError};

pub use draft::plan;
pub use image_run::{ImageRun, PodSource};
pub use prepare::prepare;
pub use roots::RootsPlan;

/// What the user asked for (`host-ctl run` and `args`).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// A manifest, or an image to run as a pod of one app.
    pub source: PodSource,
    /// The pod's name (`--name`).
    pub name: Option<String>,
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
    /// Gzip the stage1 image (see `host-ctl run --help`).
    pub gzip_initramfs: bool,
    /// The stage1 image to boot (a digest or a file); the one built for
    /// this agent and kernel when `None`.
    pub stage1: Option<String>,
    pub detach: bool,
    /// How big each app's log files may grow.
    pub log_rotation: Rotation,
    /// `--net`: replaces the manifest's network mode (its ports stay).
    pub network: Option<Network>,
    /// `-p`: ports published besides the manifest's.
    pub publish: Vec<PortMapping>,
    /// Whether the VM is (or was) booted for the warm pool.
    pub origin: VmOrigin,
    /// The host's TSC rate, when measured already: a claim plans with
    /// its pool VM's. `None`: measured when the machine needs it.
    pub tsc_khz: Option<u64>,
    /// How much to tell about the choices made (`--quiet`, `--verbose`).
    pub verbosity: Verbosity,
}

/// How a pod's VM comes to be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VmOrigin {
    /// Booted for its pod, with a 9p device per host volume.
    #[default]
    Cold,
    /// Booted for the warm pool before its pod was known: the pod share
    /// and one volumes share, and an agent that waits to be claimed.
    Pooled,
}

/// Everything a pod needs, worked out before anything is created.
pub struct PodPlan {
    pub dir: PodDir,
    pub pod: PodManifest,
    pub kernel: host::Kernel,
    pub stage1: Stage1,
    pub roots: RootsPlan,
    /// The images the pod's roots come from (its lease in the store).
    pub images: Vec<String>,
    pub launch: VmLaunch,
    pub aliases: Vec<Alias>,
    pub cid: u32,
    /// The guest driver of the VM's virtio transport (a kernel module).
    pub transport: &'static str,
    /// The interface the agent configures; `None`: loopback only.
    pub guest_net: Option<GuestNetwork>,
    /// The network's host side, which `prepare` sets up.
    pub net: network::NetPlan,
    /// What was chosen and why, for the user.
    pub notes: Notes,
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
    #[error(transparent)]
    Stage1(#[from] Stage1Error),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("app {app:?}: root archive {}", path.display())]
    RootArchive {
        app: String,
        path: PathBuf,
        #[source]
        source: Box<ImageError>,
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
    /// The pod cannot run in a VM of the warm pool (nothing was changed).
    #[error("{0}")]
    NotFit(String),
}

impl From<kvmpod_api::validate::ManifestError> for LaunchError {
    fn from(e: kvmpod_api::validate::ManifestError) -> Self {
        LaunchError::Manifest(Box::new(e))
    }
}

impl RunOptions {
    /// `host-ctl run`'s defaults for a pod from `source`: a VM of 512 MiB
    /// and one CPU on the QEMU backend, accelerator and vsock chosen for
    /// this host, 60 s to boot, 10 s of grace on stop, 300 s for the agent
    /// to linger, log files rotated at their defaults.
    pub fn new(source: PodSource, state_dir: PathBuf) -> Self {
        RunOptions {
            source,
            name: None,
            state_dir,
            kernel: None,
            modules_dir: None,
            agent: None,
            accel: AccelRequest::Auto,
            hypervisor: HypervisorKind::Qemu,
            vsock: VsockMode::Auto,
            memory_mib: 512,
            cpus: 1,
            boot_timeout: Duration::from_secs(60),
            grace: Duration::from_secs(10),
            linger: Duration::from_secs(300),
            debug: false,
            gzip_initramfs: false,
            stage1: None,
            detach: false,
            log_rotation: Rotation::default(),
            network: None,
            publish: Vec::new(),
            origin: VmOrigin::Cold,
            tsc_khz: None,
            verbosity: Verbosity::Normal,
        }
    }

    /// How errors name what the user gave: the manifest's path, or the
    /// command line.
    pub fn shown_source(&self) -> PathBuf {
        match &self.source {
            PodSource::Manifest(p) => p.clone(),
            PodSource::Image(r) => PathBuf::from(format!("(host-ctl run {})", r.image)),
            PodSource::PoolMember => PathBuf::from("(host-ctl pool)"),
        }
    }
}

impl PodPlan {
    /// The host bind mounts the pod needs, in the order they are made: its
    /// layers in its share, then the backend's share aliases.
    pub fn host_binds(&self) -> Vec<Alias> {
        let mut binds = guest::layer_aliases(self);
        binds.extend(self.aliases.iter().cloned());
        binds
    }
}
