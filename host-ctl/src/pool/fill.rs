//! `pool fill`: boots members until the pool has as many as it keeps. One
//! fill at a time (`pool/fill.lock`); it runs in a session of its own, so
//! the VMs it starts belong to no terminal.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use kvmpod_api::timeline::Stage;

use super::members::{lock, members, Readiness};
use super::spec::{pool_dir, PoolSpec};
use super::{io, PoolError};
use crate::agent::console;
use crate::launch::pooled::prepare_member;
use crate::pod::monitor::spawn;
use crate::pod::record;
use crate::pod::{store, PodDir};
use crate::vmm::Supervised;

/// Boots members until the pool is full (or gone); returns how many it
/// booted. A round in which every boot failed ends the fill with the
/// first failure, rather than booting forever.
pub async fn fill(state_dir: &Path) -> Result<usize, PoolError> {
    let Some(_fill) = lock(state_dir, "fill", Duration::from_secs(600))? else {
        return Err(PoolError::Invalid(
            "another pool fill has been booting VMs for 10 minutes".into(),
        ));
    };
    let mut booted = 0;
    loop {
        let Some(spec) = PoolSpec::read(state_dir)? else {
            return Ok(booted);
        };
        let mut live = 0;
        for m in members(state_dir)? {
            // This fill is the only one: a member with no VM is nobody's.
            if m.readiness() == Readiness::Dead || m.record.vm.is_none() {
                m.discard();
            } else {
                live += 1;
            }
        }
        let deficit = (spec.size as usize).saturating_sub(live);
        if deficit == 0 {
            return Ok(booted);
        }
        let boots = (0..deficit).map(|_| boot_member(&spec, state_dir));
        let results = futures_util::future::join_all(boots).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        booted += ok;
        if ok == 0 {
            if let Some(Err(e)) = results.into_iter().next() {
                return Err(e);
            }
        }
    }
}

/// Boots one member to its waiting agent; on failure nothing is left.
async fn boot_member(spec: &PoolSpec, state_dir: &Path) -> Result<PodDir, PoolError> {
    let o = spec.member_options(state_dir);
    let plan = prepare_member(&o, PodDir::planned(state_dir))?;
    let dir = plan.dir;
    let mut vm = match plan.launch.start(&dir, false).await {
        Ok(vm) => vm,
        Err(e) => {
            let _ = store::remove(&dir);
            return Err(e.into());
        }
    };
    let recorded = record::update(&dir, |r| {
        r.vm = vm.vm.proc_ref();
        r.vsock_backend = vm.vsock_backend.as_ref().and_then(Supervised::proc_ref);
        r.net_backend = vm.net_backend.as_ref().and_then(Supervised::proc_ref);
        r.started = Some(record::now());
    });
    let until = Instant::now() + Duration::from_secs(spec.boot_timeout_secs);
    let waiting = recorded.is_ok()
        && console::wait_until_stage(
            &dir.console_log(),
            Stage::PoolWaiting,
            &mut || vm.vm.exited().is_some(),
            until,
        )
        .await;
    if !waiting {
        vm.kill().await;
        let progress =
            console::progress(&std::fs::read_to_string(dir.console_log()).unwrap_or_default());
        let _ = store::remove(&dir);
        return Err(PoolError::Invalid(format!(
            "pool VM {} did not come up: {}{}",
            dir.id,
            progress.stage,
            progress
                .fatal
                .map(|f| format!(" ({f})"))
                .unwrap_or_default()
        )));
    }
    Ok(dir)
}

/// The niceness a fill and the VMs it boots run at: a pool refilling in
/// the background takes the CPU from no running pod (under TCG a boot is
/// seconds of CPU). A claimed VM is set back to 0 (see `claim`).
pub const FILL_NICE: i32 = 10;

/// Starts `host-ctl pool fill` in a session of its own, at [`FILL_NICE`],
/// logging to `pool/fill.log`.
pub fn spawn_fill(state_dir: &Path) -> Result<Child, PoolError> {
    let dir = pool_dir(state_dir);
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let log_path = dir.join("fill.log");
    let mut cmd = spawn::host_ctl(state_dir, &["pool", "fill"], &log_path)?;
    spawn::in_own_session(&mut cmd);
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls setpriority, which is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::setpriority(libc::PRIO_PROCESS, 0, FILL_NICE) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(io("starting a pool fill, logging to", &log_path))
}
