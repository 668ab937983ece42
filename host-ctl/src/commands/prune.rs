//! `host-ctl prune`: everything `gc` removes (exited pods, the warm pool's
//! dead VMs, stale CID leases), then what `image prune` removes (unnamed
//! images no pod uses, unused layers, leftovers of interrupted imports),
//! as `podman system prune` does for containers and images.

use std::path::Path;

use anyhow::Result;

use super::{image, rm};
use crate::image::ImageStore;

pub fn run(state_dir: &Path) -> Result<i32> {
    rm::gc(state_dir)?;
    // No image store yet: no image to prune.
    if let Some(images) = ImageStore::existing(state_dir) {
        image::prune(&images)?;
    }
    Ok(0)
}
