//! Preparing a pod on the host: every check first, then its directory,
//! record, CID lease, files, initramfs and share aliases. Nothing is left
//! behind when the manifest or the host is not fit to run it.

use super::draft::{draft, finish, Check};
use super::{initramfs, LaunchError, PodPlan, RunOptions};
use crate::pod::record::{self, AppSummary, PodRecord, State};
use crate::pod::{cids, store, PodDir, PodError};
use crate::ui::text::error_chain;
use crate::vmm;

/// Validates, creates the pod's directory and record, leases its CID,
/// builds its initramfs and mounts its share aliases. `mark` is told the
/// moments `--timings` shows.
pub fn prepare(o: &RunOptions, mark: &mut dyn FnMut(&'static str)) -> Result<PodPlan, LaunchError> {
    // Every check first, with nothing created: the CID is not leased yet.
    let d = draft(o, PodDir::planned(&o.state_dir), Check::Strict)?;
    // The command lines too, with a stand-in CID.
    finish(o, d.clone(), cids::FIRST)?;
    let dir = d.dir.clone();
    dir.make(&o.state_dir)?;
    record::create(&dir, &PodRecord::new(&dir, &o.manifest, o.detach))?;
    let result = (|| {
        let cid = cids::allocate(&o.state_dir, &dir.id)?;
        let plan = finish(o, d, cid)?;
        for n in &plan.notes {
            eprintln!("host-ctl: {n}");
        }
        mark("validated");
        create_files(o, &plan)?;
        mark("initramfs-built");
        vmm::mount_aliases(&plan.aliases, &dir.aliases_dir())?;
        plan.launch.write(&dir)?;
        mark("kernel-ready");
        Ok(plan)
    })();
    if let Err(e) = &result {
        let msg = error_chain(e);
        let _ = record::update(&dir, |r| {
            r.state = State::Exited;
            r.finished = Some(record::now());
            r.exit_reason = Some(format!("preparing failed: {msg}"));
        });
        store::release(&dir);
    }
    result
}

/// The pod's record filled in, its validated manifest, and its initramfs.
fn create_files(o: &RunOptions, plan: &PodPlan) -> Result<(), LaunchError> {
    let dir = &plan.dir;
    record::update(dir, |r| {
        r.cid = Some(plan.cid);
        r.accel = Some(plan.launch.accel);
        r.hypervisor = Some(plan.launch.hypervisor);
        r.endpoint = Some(plan.launch.endpoint.clone());
        r.apps = plan
            .pod
            .apps
            .iter()
            .map(|a| AppSummary::pending(&a.name))
            .collect();
    })?;
    let path = dir.manifest();
    let text = serde_json::to_vec_pretty(&plan.pod).map_err(|source| PodError::BadFile {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&path, text).map_err(|source| LaunchError::Write { path, source })?;
    let bytes = initramfs::build(o, plan)?;
    record::update(dir, |r| r.initramfs_bytes = Some(bytes))?;
    Ok(())
}
