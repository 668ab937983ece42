//! The image store's one error type: every variant names what it is about
//! (a path, an entry, a digest), so a user can act on the message alone.

use std::io;
use std::path::Path;

/// Everything that can go wrong importing, resolving or removing images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    // The source is printed by whoever prints the chain (anyhow's `{:#}`
    // at the command line), so the message does not repeat it.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{context}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
    /// The source is not an image we can read, or is inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// A blob's bytes do not hash to the digest that names it.
    #[error("{what}: its content has digest {actual}, but it is named {expected}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// A layer's uncompressed tar does not hash to the config's diff ID.
    #[error("layer {layer}: its uncompressed content has digest {actual}, but the image config says {expected}")]
    DiffIdMismatch {
        layer: String,
        expected: String,
        actual: String,
    },
    /// A layer entry that could write outside its snapshot, or that we refuse.
    #[error("refusing layer {layer}: entry {entry:?}: {reason}")]
    Hostile {
        layer: String,
        entry: String,
        reason: String,
    },
    #[error("invalid image reference {reference:?}: {reason}")]
    BadReference { reference: String, reason: String },
    #[error(
        "no image {reference:?} in the store (import one with `host-ctl image import FILE|DIR`)"
    )]
    NotFound { reference: String },
    #[error("image reference {reference:?} is ambiguous: it matches {}", matches.join(", "))]
    Ambiguous {
        reference: String,
        matches: Vec<String>,
    },
    /// A registry could not be reached or refused a request, or what it
    /// sent is not an image we can run (`image pull`).
    #[error("pulling {reference}: {reason}")]
    Pull { reference: String, reason: String },
    /// Plain HTTP was asked for to a registry that is not on this host:
    /// anyone on the way could change the image.
    #[error("pulling {reference}: refusing plain HTTP to registry {registry}, which is not a loopback address (pass --insecure to allow it)")]
    Insecure { reference: String, registry: String },
    #[error("image {reference:?} is in use by pod(s) {} (remove them first, or force)", pods.join(", "))]
    InUse {
        reference: String,
        pods: Vec<String>,
    },
}

impl ImageError {
    /// An I/O error about `path`, with what we were doing.
    pub fn io(what: &str, path: &Path, source: io::Error) -> ImageError {
        ImageError::Io {
            context: format!("{what} {}", path.display()),
            source,
        }
    }

    pub fn json(what: &str, path: &Path, source: serde_json::Error) -> ImageError {
        ImageError::Json {
            context: format!("{what} {}", path.display()),
            source,
        }
    }
}

/// Adds path context to `io::Result`s.
pub trait IoContext<T> {
    fn ctx(self, what: &str, path: &Path) -> Result<T, ImageError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: &str, path: &Path) -> Result<T, ImageError> {
        self.map_err(|e| ImageError::io(what, path, e))
    }
}
