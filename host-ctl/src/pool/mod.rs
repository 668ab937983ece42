//! The warm pool: VMs booted to a waiting agent before their pods are
//! known, so that `host-ctl run` skips the boot (as Kata's VM cache and
//! Firecracker's snapshots do).
//!
//! `<state>/pool/pool.json` ([`PoolSpec`]) says how many VMs the pool keeps
//! and their shape; its members are pod directories whose record says
//! `pooled` (`list` and pod commands do not see them). `pool fill`, a
//! process of its own session, boots members until the pool is full; `run`
//! takes one under `pool/claim.lock` (so two runs never get the same VM),
//! prepares its pod into it and claims it (see [`kvmpod_api::pool`]), then
//! starts a fill for the replacement. A member whose VM died is removed,
//! never handed out; one that does not answer its claim is killed and the
//! pod boots a VM of its own. The pool's VMs outlive every host-ctl
//! process; `pool stop` (and `gc`, for dead ones) removes them.

mod claim;
mod fill;
mod members;
mod spec;

use std::path::PathBuf;

pub use claim::claim;
pub use fill::{fill, spawn_fill};
pub use members::{gc, members, stop, Member, Readiness};
pub use spec::{pool_dir, PoolSpec};

use crate::launch::LaunchError;
use crate::pod::PodError;

/// Why the pool could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", path.display())]
    BadFile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Pod(#[from] PodError),
    #[error(transparent)]
    Vmm(#[from] crate::vmm::VmmError),
}

fn io(what: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> PoolError {
    let path = path.to_path_buf();
    move |source| PoolError::Io { what, path, source }
}
