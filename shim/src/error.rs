//! What goes wrong in the shim, said the way containerd passes it on to
//! the user (`ctr: ...`).

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("bad OCI spec: {0}")]
    Spec(String),
    #[error("host-ctl {args}: {why}")]
    HostCtl { args: String, why: String },
    #[error("mounting the rootfs on {target}: {why}")]
    Mount { target: String, why: String },
    #[error("the pod's agent: {0}")]
    Guest(String),
    #[error("no task {0}")]
    NoTask(String),
    #[error("{0}")]
    Precondition(String),
}

impl From<ShimError> for containerd_shim::Error {
    fn from(e: ShimError) -> Self {
        match e {
            ShimError::NoTask(_) => containerd_shim::Error::NotFoundError(e.to_string()),
            ShimError::Precondition(_) => {
                containerd_shim::Error::FailedPreconditionError(e.to_string())
            }
            ShimError::Spec(_) => containerd_shim::Error::InvalidArgument(e.to_string()),
            _ => containerd_shim::Error::Other(e.to_string()),
        }
    }
}
