//! `host-ctl app add|rm`: apps added to and removed from a running sandbox
//! pod (a pod whose manifest says `"sandbox": true`), as `rkt app add` and
//! `rkt app rm` did in rkt's app sandbox.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use kvmpod_api::protocol::AppState;

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
            added::remove_app(&pod, &app, force).await?;
            Ok(0)
        }
    }
}
