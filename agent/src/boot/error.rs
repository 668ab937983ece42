//! Boot's one error type: what stops the guest from coming up. Before the
//! vsock server is up it can only be told on the console.

use std::io;
use std::path::PathBuf;

use kvmpod_api::validate::FieldError;

use crate::error::SysError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Config {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: {error}", path.display())]
    Manifest { path: PathBuf, error: FieldError },
    #[error("the kernel command line has no {0}= (host-ctl sets it)")]
    NoParam(&'static str),
    #[error("the stage1 image has no kernel modules for the virtio transport {0:?}")]
    NoTransport(String),
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}
