//! `host-ctl inspect POD`: everything known of a pod, as JSON: what
//! `status --format json` shows (its record, and a running pod's agent's
//! own account), the validated manifest it runs, and how its VM was
//! started (`launch.json`: the hypervisor's and its backends' command
//! lines, the vsock endpoint, the network's host side).

use std::path::Path;

use anyhow::Result;
use kvmpod_api::manifest::PodManifest;
use serde::Serialize;

use super::status::{self, StatusView};
use crate::pod::monitor::read_manifest;
use crate::pod::{StoredPod, VmLaunch};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Inspection {
    #[serde(flatten)]
    status: StatusView,
    /// Absent when the pod failed before it was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<PodManifest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    launch: Option<VmLaunch>,
    /// The pod's directory on the host.
    directory: std::path::PathBuf,
}

pub async fn run(state_dir: &Path, ids: &[String]) -> Result<i32> {
    let mut all = Vec::with_capacity(ids.len());
    for id in ids {
        let pod = StoredPod::open(state_dir, id)?;
        all.push(Inspection {
            status: status::view(&pod).await?,
            pod: read_manifest(&pod.dir).ok(),
            launch: VmLaunch::read(&pod.dir).ok(),
            directory: pod.dir.path.clone(),
        });
    }
    // An array, as `docker inspect` and `podman inspect` print.
    println!("{}", serde_json::to_string_pretty(&all)?);
    Ok(0)
}
