//! `host-ctl attach <pod> <app>`: follows an app's output from now on and,
//! for an app started with `"stdin": true`, feeds it this process's stdin,
//! on an io stream of its own. Ctrl-C detaches and leaves the app running;
//! when the app exits, so does attach, with the app's status.

use std::path::Path;

use anyhow::{anyhow, Result};
use kvmpod_api::iostream::Request;
use kvmpod_api::manifest::PodManifest;

use super::exec::{agent_endpoint, print_output};
use crate::agent::iostream;
use crate::pod::StoredPod;

pub async fn run(state_dir: &Path, id: &str, app: &str) -> Result<i32> {
    let pod = StoredPod::open(state_dir, id)?;
    let manifest: PodManifest = serde_json::from_slice(&std::fs::read(pod.dir.manifest())?)?;
    let Some(spec) = manifest.apps.iter().find(|a| a.name == app) else {
        anyhow::bail!("pod {} has no app named {app:?}", pod.record.id);
    };
    let request = Request::Attach {
        app: app.to_string(),
    };
    let (tx, mut rx) = iostream::open(agent_endpoint(&pod)?, &request)
        .await
        .map_err(|e| anyhow!("attaching: {e}"))?;
    let feeder = spec.stdin.then(|| {
        tokio::spawn(async move {
            tx.pump_stdin(tokio::io::stdin()).await;
        })
    });
    let ended = tokio::select! {
        status = print_output(&mut rx, "attach") => Some(status),
        _ = tokio::signal::ctrl_c() => None,
    };
    if let Some(f) = feeder {
        f.abort();
    }
    match ended {
        Some(status) => status,
        None => {
            eprintln!("host-ctl: detached from {app}; it keeps running");
            Ok(0)
        }
    }
}
