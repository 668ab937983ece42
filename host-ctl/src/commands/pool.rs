//! `host-ctl pool start|status|stop|fill`: the warm pool (see
//! [`crate::pool`]).

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::Format;
use crate::pool::{self, PoolSpec};
use crate::ui::{progress, table};

/// `pool start`: writes what the pool keeps, then boots it (in a fill of
/// its own session, so the VMs belong to no terminal) and waits until it
/// is full.
pub fn start(state_dir: &Path, spec: PoolSpec) -> Result<i32> {
    spec.check()?;
    if let Some(old) = PoolSpec::read(state_dir)? {
        let resized = PoolSpec {
            size: spec.size,
            ..old
        };
        if resized != spec {
            bail!(
                "a pool of other VMs is running (`host-ctl pool status`); `host-ctl pool stop` it first"
            );
        }
    }
    spec.write(state_dir)?;
    let booting = progress::step(format!("booting the pool's {} VM(s)", spec.size));
    let status = pool::spawn_fill(state_dir)?
        .wait()
        .context("waiting for the pool's fill")?;
    drop(booting);
    if !status.success() {
        let log = pool::pool_dir(state_dir).join("fill.log");
        bail!(
            "the pool could not boot its VMs:\n{}",
            crate::ui::text::indent(&crate::vmm::process::tail(&log, 10))
        );
    }
    status_table(state_dir)
}

/// `pool fill` (hidden): boots members until the pool is full.
pub async fn fill(state_dir: &Path) -> Result<i32> {
    let booted = pool::fill(state_dir).await?;
    eprintln!(
        "host-ctl pool fill: booted {booted} VM(s) at {}",
        crate::pod::record::now()
    );
    Ok(0)
}

/// `pool status`.
pub fn status(state_dir: &Path, format: Format) -> Result<i32> {
    if format != Format::Table {
        let members: Vec<serde_json::Value> = pool::members(state_dir)?
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.dir.id,
                    "cid": m.record.cid,
                    "state": m.readiness().as_str(),
                    "created": m.record.created,
                })
            })
            .collect();
        let out = serde_json::json!({
            "pool": PoolSpec::read(state_dir)?,
            "members": members,
        });
        // A template line per member.
        format.print_rows(&out, &members)?;
        return Ok(0);
    }
    status_table(state_dir)
}

fn status_table(state_dir: &Path) -> Result<i32> {
    match PoolSpec::read(state_dir)? {
        Some(s) => println!(
            "pool: {} VM(s) of {} MiB, {} vCPU(s), {}",
            s.size,
            s.memory_mib,
            s.cpus,
            s.hypervisor.name()
        ),
        None => println!("no pool (`host-ctl pool start` makes one)"),
    }
    let rows: Vec<Vec<String>> = pool::members(state_dir)?
        .iter()
        .map(|m| {
            vec![
                m.dir.id.chars().take(8).collect(),
                m.record.cid.map_or("-".into(), |c| c.to_string()),
                m.readiness().as_str().into(),
                m.record.created.clone(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        table::print(&["ID", "CID", "STATE", "CREATED"], &rows);
    }
    Ok(0)
}

/// `pool stop`.
pub fn stop(state_dir: &Path) -> Result<i32> {
    let stopping = progress::step("stopping the pool's VMs");
    let removed = pool::stop(state_dir);
    drop(stopping);
    let removed = removed?;
    println!("pool stopped; removed {} VM(s)", removed.len());
    Ok(0)
}
