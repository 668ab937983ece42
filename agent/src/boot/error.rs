//! Boot's one error type: what stops the guest from coming up. Before the
//! vsock server is up it can only be told on the console.

use std::io;

use kvmpod_api::validate::FieldError;

use crate::error::SysError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{path}: {source}")]
    Read {
        path: &'static str,
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Config {
        path: &'static str,
        source: serde_json::Error,
    },
    #[error("{path}: {error}")]
    Manifest {
        path: &'static str,
        error: FieldError,
    },
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}
