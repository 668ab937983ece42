//! kvmpod's stage1 guest image, as rkt shipped `stage1-kvm.aci`: the agent
//! as `/init` and the kernel modules a pod's VM needs, for every virtio
//! transport, in one initramfs. Nothing in it is per pod, so it is built
//! once per agent build, kernel and compression, kept content-addressed in
//! `<state>/stage1/` and booted by every pod (`--stage1` picks another).
//!
//! ```text
//! <state>/stage1/<sha256>.img    the image (its name is its digest)
//! <state>/stage1/<sha256>.json   what it is: name, version, kernel, agent
//! ```

mod store;

pub use store::{Stage1, Stage1Store};

use std::path::PathBuf;

/// Why a stage1 image cannot be built or found.
#[derive(Debug, thiserror::Error)]
pub enum Stage1Error {
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("building the stage1 image")]
    Build(#[source] Box<rootfs_builder::initramfs::BuildError>),
    #[error("{}: not a stage1 image record", path.display())]
    BadRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("no stage1 image {0:?} (see `host-ctl stage1 ls`; a file path is taken too)")]
    NotFound(String),
    #[error("stage1 image {reference:?} is ambiguous: {matches}")]
    Ambiguous { reference: String, matches: String },
    #[error("stage1 image {digest} holds modules for kernel {image_kernel}, but the pod boots {kernel}: build one for this kernel (`host-ctl stage1 build`)")]
    WrongKernel {
        digest: String,
        image_kernel: String,
        kernel: String,
    },
}
