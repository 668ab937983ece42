//! `host-ctl app add|rm`: apps added to and removed from a running sandbox
//! pod (a pod whose manifest says `"sandbox": true`), as `rkt app add` and
//! `rkt app rm` did in rkt's app sandbox.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use kvmpod_api::protocol::{AppState, SignalRequest, WaitRequest};

use crate::agent;
use crate::launch::added;
use crate::pod::StoredPod;

#[derive(Debug, clap::Subcommand)]
pub enum AppCommand {
    /// Add the one app of MANIFEST (its root, image and volumes as in a
    /// pod manifest; its mount points may name the pod's volumes) to a
    /// running sandbox pod, and start it.
    Add { pod: String, manifest: PathBuf },
    /// Remove an added app that has exited (with --force, kill it first),
    /// and its output, as `docker rm` does.
    Rm {
        pod: String,
        app: String,
        #[arg(short, long)]
        force: bool,
    },
}

pub async fn run(state_dir: &Path, cmd: AppCommand) -> Result<i32> {
    match cmd {
        AppCommand::Add { pod, manifest } => {
            let pod = StoredPod::open(state_dir, &pod)?;
            let status = added::add_app(state_dir, &pod, &manifest).await?;
            let state = status.state.enum_value_or_default();
            if state == AppState::APP_STATE_FAILED {
                bail!(
                    "app {:?} was added but could not start: {}",
                    status.name,
                    status.error
                );
            }
            println!("{}", status.name);
            Ok(0)
        }
        AppCommand::Rm { pod, app, force } => {
            let pod = StoredPod::open(state_dir, &pod)?;
            if force {
                kill_and_wait(&pod, &app).await?;
            }
            added::remove_app(&pod, &app).await?;
            Ok(0)
        }
    }
}

/// SIGKILLs the app's processes and waits for its exit.
async fn kill_and_wait(pod: &StoredPod, app: &str) -> Result<()> {
    let client = pod.client().await?;
    let mut req = SignalRequest::new();
    req.app = app.to_string();
    req.signal = libc::SIGKILL;
    // Refused when it is not running: then there is nothing to kill.
    let _ = client
        .signal(agent::deadline(Duration::from_secs(10)), &req)
        .await;
    let mut wait = WaitRequest::new();
    wait.app = app.to_string();
    client
        .wait(agent::deadline(Duration::from_secs(30)), &wait)
        .await
        .map_err(|e| anyhow!("waiting for app {app:?} to exit: {e}"))?;
    Ok(())
}
