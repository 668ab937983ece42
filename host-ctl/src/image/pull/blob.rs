//! Blobs fetched from a registry: streamed to a file in the store's `tmp/`
//! (layers) or kept in memory (a config, which is small), hashed on the
//! way, and refused as soon as they grow past their descriptor's size, or
//! when they end short of it or hash to anything but its digest. A
//! registry, or anyone between it and us, cannot fill the disk or slip in
//! other content.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

use futures_util::StreamExt;
use oci_spec::image::Descriptor;
use sha2::{Digest as _, Sha256};

use super::registry::Registry;
use crate::image::digest::{self, SHA256_PREFIX};
use crate::image::error::{ImageError, IoContext};

/// The largest config we keep in memory (as `image import` allows).
const CONFIG_MAX: u64 = 16 << 20;

/// Downloads the blob `desc` names into a new file at `path`, telling
/// `advanced` of each piece that arrived, and returns its size.
pub async fn to_file(
    registry: &Registry<'_>,
    desc: &Descriptor,
    path: &Path,
    advanced: &(dyn Fn(u64) + Sync),
) -> Result<u64, ImageError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .ctx("creating", path)?;
    let mut out = BufWriter::with_capacity(256 * 1024, file);
    copy_verified(registry, desc, &mut out, path, advanced).await?;
    let file: File = out
        .into_inner()
        .map_err(|e| ImageError::io("writing", path, e.into_error()))?;
    drop(file);
    Ok(desc.size())
}

/// Downloads a config blob into memory.
pub async fn to_memory(registry: &Registry<'_>, desc: &Descriptor) -> Result<Vec<u8>, ImageError> {
    if desc.size() > CONFIG_MAX {
        return Err(registry.fail(format!(
            "its config {} is {} bytes: too large for image metadata",
            desc.digest(),
            desc.size()
        )));
    }
    let mut out = Vec::new();
    copy_verified(
        registry,
        desc,
        &mut out,
        Path::new("an image config"),
        &|_| {},
    )
    .await?;
    Ok(out)
}

/// Streams the blob into `out`, checking its size and digest; `shown`
/// names `out` in errors, `advanced` is told each piece's size once it
/// is written.
async fn copy_verified(
    registry: &Registry<'_>,
    desc: &Descriptor,
    out: &mut dyn Write,
    shown: &Path,
    advanced: &(dyn Fn(u64) + Sync),
) -> Result<(), ImageError> {
    let expected = desc.digest().to_string();
    digest::require_hex(&expected, "a blob descriptor of the manifest")?;
    let size = desc.size();
    let mut stream = registry.blob(&expected).await?;
    let mut hasher = Sha256::new();
    let mut count: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| registry.fail(format!("downloading blob {expected}: {e}")))?;
        count += chunk.len() as u64;
        if count > size {
            return Err(registry.fail(format!(
                "blob {expected} is larger than the {size} bytes its descriptor says"
            )));
        }
        hasher.update(&chunk);
        out.write_all(&chunk).ctx("writing", shown)?;
        advanced(chunk.len() as u64);
    }
    out.flush().ctx("writing", shown)?;
    if count != size {
        return Err(registry.fail(format!(
            "blob {expected} ended after {count} of the {size} bytes its descriptor says"
        )));
    }
    let actual = format!("{SHA256_PREFIX}{}", hex::encode(hasher.finalize()));
    if actual != expected {
        return Err(ImageError::DigestMismatch {
            what: format!("blob downloaded to {}", shown.display()),
            expected,
            actual,
        });
    }
    Ok(())
}
