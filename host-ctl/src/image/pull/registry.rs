//! The registry side of a pull, through `oci-client`: one client per pull,
//! anonymous, over HTTPS unless the target allows plain HTTP. A reference
//! to a multi-arch index resolves to its linux/amd64 manifest. The client's
//! errors become messages that say what the registry answered (its status
//! and error code) or why it could not be reached.

use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol, SizedStream};
use oci_client::errors::{OciDistributionError, OciEnvelope, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{Arch, Descriptor, ImageIndex, ImageManifest, Os};

use super::target::Target;
use crate::image::digest;
use crate::image::error::ImageError;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// What we ask for: images and indexes, OCI or Docker schema 2 (never
/// schema 1, which has no content-addressed config).
const ACCEPTED: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// A registry, for one target.
pub struct Registry<'a> {
    client: Client,
    target: &'a Target,
}

/// The image manifest a pull imports.
pub struct Manifest {
    /// Its bytes, as the registry sent them (the store keeps them).
    pub bytes: Vec<u8>,
    /// The sha256 of `bytes`: the image's identity in the store.
    pub digest: String,
    pub parsed: ImageManifest,
}

enum Kind {
    Manifest,
    Index,
}

impl<'a> Registry<'a> {
    pub fn new(target: &'a Target) -> Registry<'a> {
        let config = ClientConfig {
            protocol: if target.http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            // We pick the platform ourselves, from the raw index.
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(120)),
            ..ClientConfig::default()
        };
        Registry {
            client: Client::new(config),
            target,
        }
    }

    /// The linux/amd64 image manifest the target names: the manifest
    /// itself, or the linux/amd64 entry of the index it names.
    pub async fn manifest(&self) -> Result<Manifest, ImageError> {
        let bytes = self.raw_manifest(&self.target.reference).await?;
        let top_digest = digest::of_bytes(&bytes);
        let (bytes, digest) = match self.kind(&bytes)? {
            Kind::Manifest => (bytes, top_digest),
            Kind::Index => {
                let entry = self.pick_amd64(&bytes, &top_digest)?;
                let wanted = entry.digest().to_string();
                digest::require_hex(&wanted, "the index's linux/amd64 entry")?;
                let by_digest = self.target.reference.clone_with_digest(wanted.clone());
                let bytes = self.raw_manifest(&by_digest).await?;
                let actual = digest::of_bytes(&bytes);
                if actual != wanted {
                    return Err(ImageError::DigestMismatch {
                        what: format!("the linux/amd64 manifest of {}", self.target.shown),
                        expected: wanted,
                        actual,
                    });
                }
                if matches!(self.kind(&bytes)?, Kind::Index) {
                    return Err(self.fail(format!(
                        "the linux/amd64 entry {actual} of its index is another index"
                    )));
                }
                (bytes, actual)
            }
        };
        let parsed = ImageManifest::from_reader(&bytes[..])
            .map_err(|e| self.fail(format!("parsing manifest {digest}: {e}")))?;
        Ok(Manifest {
            bytes,
            digest,
            parsed,
        })
    }

    /// A blob's bytes as they arrive. Only the registry is asked: a
    /// descriptor's `urls` (foreign layers) could point anywhere, over
    /// plain HTTP too, so they are not followed.
    pub async fn blob(&self, digest: &str) -> Result<SizedStream, ImageError> {
        self.client
            .pull_blob_stream(&self.target.reference, digest)
            .await
            .map_err(|e| self.fail(format!("fetching blob {digest}: {}", self.describe(&e))))
    }

    /// An error about this pull.
    pub fn fail(&self, reason: String) -> ImageError {
        ImageError::Pull {
            reference: self.target.shown.clone(),
            reason,
        }
    }

    async fn raw_manifest(&self, reference: &Reference) -> Result<Vec<u8>, ImageError> {
        let what = match reference.digest() {
            Some(d) => format!("manifest {d}"),
            None => "the manifest".to_string(),
        };
        self.client
            .pull_manifest_raw(reference, &RegistryAuth::Anonymous, ACCEPTED)
            .await
            .map(|(bytes, _)| bytes.to_vec())
            .map_err(|e| self.fail(format!("fetching {what}: {}", self.describe(&e))))
    }

    /// Whether a manifest body is an image manifest or an index, by its
    /// content (a raw pull does not give us the Content-Type).
    fn kind(&self, bytes: &[u8]) -> Result<Kind, ImageError> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            self.fail(format!(
                "the registry sent a manifest that is not JSON: {e}"
            ))
        })?;
        if value["schemaVersion"] != 2 {
            return Err(self.fail(format!(
                "the manifest has schemaVersion {}: only schema 2 (OCI or Docker) images can be pulled",
                value["schemaVersion"]
            )));
        }
        match value["mediaType"].as_str() {
            Some(OCI_INDEX | DOCKER_LIST) => Ok(Kind::Index),
            Some(OCI_MANIFEST | DOCKER_MANIFEST) => Ok(Kind::Manifest),
            Some(other) => Err(self.fail(format!(
                "the manifest has media type {other}, not an image manifest or index"
            ))),
            None if value.get("manifests").is_some() => Ok(Kind::Index),
            None => Ok(Kind::Manifest),
        }
    }

    /// The linux/amd64 entry of an index.
    fn pick_amd64(&self, bytes: &[u8], index_digest: &str) -> Result<Descriptor, ImageError> {
        let index = ImageIndex::from_reader(bytes)
            .map_err(|e| self.fail(format!("parsing image index {index_digest}: {e}")))?;
        let is_amd64 = |d: &&Descriptor| {
            d.platform()
                .as_ref()
                .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64)
        };
        if let Some(entry) = index.manifests().iter().find(is_amd64) {
            return Ok(entry.clone());
        }
        let platforms: Vec<String> = index
            .manifests()
            .iter()
            .filter_map(|d| d.platform().as_ref())
            .map(|p| format!("{}/{}", p.os(), p.architecture()))
            .collect();
        Err(self.fail(format!(
            "image index {index_digest} has no linux/amd64 image (it has: {})",
            if platforms.is_empty() {
                "no platforms".to_string()
            } else {
                platforms.join(", ")
            }
        )))
    }

    /// What went wrong, in terms of the registry: its address, and the
    /// status it answered or why it could not be reached.
    fn describe(&self, e: &OciDistributionError) -> String {
        let registry = self.target.registry();
        match e {
            OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout() => {
                format!("registry {registry} is unreachable: {}", chain(r))
            }
            OciDistributionError::RequestError(r) => {
                format!("talking to registry {registry}: {}", chain(r))
            }
            OciDistributionError::UnauthorizedError { url } => format!(
                "registry {registry} answered 401 Unauthorized for {url} (host-ctl pulls anonymously)"
            ),
            OciDistributionError::AuthenticationFailure(reason) => format!(
                "registry {registry} refused an anonymous token (401 Unauthorized): {}",
                reason.trim()
            ),
            OciDistributionError::RegistryError { envelope, url } => format!(
                "registry {registry} answered {} for {url}: {}",
                status_of(envelope),
                codes(envelope)
            ),
            OciDistributionError::ServerError { code, url, message } => format!(
                "registry {registry} answered {code}{} for {url}: {}",
                reason_phrase(*code).map(|r| format!(" {r}")).unwrap_or_default(),
                message.trim()
            ),
            other => format!("registry {registry}: {other}"),
        }
    }
}

/// The HTTP status a registry's error codes come with (the distribution
/// spec gives each code its status; the client keeps only the codes).
fn status_of(envelope: &OciEnvelope) -> String {
    let code = envelope.errors.first().map(|e| &e.code);
    let status: u16 = match code {
        Some(OciErrorCode::Unauthorized) => 401,
        Some(OciErrorCode::Denied) => 403,
        Some(OciErrorCode::Toomanyrequests) => 429,
        Some(
            OciErrorCode::BlobUnknown
            | OciErrorCode::BlobUploadUnknown
            | OciErrorCode::ManifestUnknown
            | OciErrorCode::NameUnknown
            | OciErrorCode::NotFound,
        ) => 404,
        _ => return "a 4xx error".to_string(),
    };
    match reason_phrase(status) {
        Some(r) => format!("{status} {r}"),
        None => status.to_string(),
    }
}

fn reason_phrase(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => return None,
    })
}

/// `CODE: message` of each error a registry sent.
fn codes(envelope: &OciEnvelope) -> String {
    let each: Vec<String> = envelope
        .errors
        .iter()
        .map(|e| {
            let code = serde_json::to_value(&e.code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{:?}", e.code));
            format!("{code}: {}", e.message)
        })
        .collect();
    each.join("; ")
}

/// An error and its causes, `outer: inner: innermost`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
