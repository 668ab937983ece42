//! What can go wrong choosing, configuring and starting a hypervisor.

use std::path::PathBuf;

/// A hypervisor-layer failure; every message names the program, file or
/// option at fault.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// A program kvmpod needs is missing or unusable.
    #[error("{0}")]
    MissingProgram(String),
    /// The pod asks for something this backend cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// The accelerator or vsock device asked for is not usable here.
    #[error("{0}")]
    Unavailable(String),
    /// A host process (the VM, its vsock backend) failed to start or died
    /// before it was ready.
    #[error("{0}")]
    Process(String),
    /// A share alias could not be set up.
    #[error("{0}")]
    Alias(String),
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
