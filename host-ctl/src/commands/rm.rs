//! `host-ctl rm` and `host-ctl gc`: removing pods that are over.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::pods::{self, Pod};
use crate::record::State;

/// Removes the named pods; a running pod only with `force` (it is stopped
/// first, without a grace period).
pub async fn rm(state_dir: &Path, ids: &[String], force: bool) -> Result<i32> {
    let mut failed = false;
    for id in ids {
        match remove_one(state_dir, id, force).await {
            Ok(removed) => println!("{removed}"),
            Err(e) => {
                eprintln!("host-ctl: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

async fn remove_one(state_dir: &Path, id: &str, force: bool) -> Result<String> {
    let pod = Pod::open(state_dir, id)?;
    if pod.record.state != State::Exited {
        if !force {
            bail!(
                "pod {} is {}; stop it first, or use --force",
                pod.record.id,
                pod.record.state.as_str()
            );
        }
        super::stop::run(state_dir, id, Duration::ZERO).await?;
    }
    std::fs::remove_dir_all(&pod.dir.path)?;
    Ok(pod.record.id)
}

/// Removes every pod that is over, after marking pods whose VM died as
/// exited (with why).
pub fn gc(state_dir: &Path) -> Result<i32> {
    for r in pods::all(state_dir)? {
        if r.state != State::Exited {
            continue;
        }
        let dir = crate::record::find(state_dir, &r.id)?;
        std::fs::remove_dir_all(&dir)?;
        println!(
            "removed {} ({})",
            r.id,
            r.exit_reason.as_deref().unwrap_or("exited")
        );
    }
    Ok(0)
}
