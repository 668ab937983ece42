//! Preparing a pod on the host: every check first, then its directory,
//! record, CID lease, files, share and share aliases. Nothing is left
//! behind when the manifest or the host is not fit to run it.

use super::draft::{draft, finish, Check};
use super::PodSource;
use super::{guest, network, LaunchError, PodPlan, RunOptions};
use crate::image::ImageStore;
use crate::pod::record::{self, AppSummary, PodRecord, State};
use crate::pod::{cids, names, store, PodDir};
use crate::ui::text::error_chain;
use crate::vmm;

/// What is being prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// A pod, to boot in a VM of its own.
    Pod,
    /// A warm pool's VM: no pod yet, its record `pooled`, its shares
    /// empty until a claim fills them.
    PoolMember,
}

/// Validates, creates the pod's directory `dir` (planned by the caller, so
/// that it can remove it whatever happens) and record, leases its CID,
/// writes its share and mounts its layers and share aliases. `mark` is
/// told the moments `--timings` shows.
pub fn prepare(
    o: &RunOptions,
    dir: PodDir,
    mark: &mut dyn FnMut(&'static str),
) -> Result<PodPlan, LaunchError> {
    prepare_as(o, dir, Role::Pod, mark)
}

/// [`prepare`] for a pod or a pool member. A pod that fails keeps its
/// directory with the reason in its record (as `status` shows it); a
/// member that fails leaves nothing.
pub(super) fn prepare_as(
    o: &RunOptions,
    dir: PodDir,
    role: Role,
    mark: &mut dyn FnMut(&'static str),
) -> Result<PodPlan, LaunchError> {
    // Every check first, with nothing created: the CID is not leased yet.
    let d = draft(o, dir, Check::Strict)?;
    // The command lines too, with a stand-in CID.
    finish(o, d.clone(), cids::FIRST)?;
    let dir = d.dir.clone();
    if let Some(name) = &o.name {
        names::claim(&o.state_dir, name, &dir.id)?;
    }
    dir.make(&o.state_dir)?;
    let mut rec = PodRecord::new(&dir, &o.shown_source(), o.detach);
    rec.name = o.name.clone();
    if let PodSource::Image(run) = &o.source {
        rec.manifest = dir.manifest();
        rec.image = Some(run.image.clone());
    }
    if role == Role::PoolMember {
        rec.state = State::Pooled;
    }
    record::create(&dir, &rec)?;
    let result = (|| {
        let cid = cids::allocate(&o.state_dir, &dir.id)?;
        let plan = finish(o, d, cid)?;
        if !plan.images.is_empty() {
            // Until the pod ends, `image rm` and `image prune` leave them.
            ImageStore::open(&o.state_dir)?.lease(&dir.id, &plan.images)?;
        }
        mark("validated");
        // First: a failure from here on is undone by `store::release`,
        // which reads it (a CNI namespace's wiring).
        plan.launch.write(&dir)?;
        record_plan(&plan)?;
        network::set_up(&plan)?;
        match role {
            Role::Pod => guest::create(o, &plan)?,
            Role::PoolMember => {
                for path in [dir.guest_dir(), dir.pool_volumes()] {
                    std::fs::create_dir_all(&path)
                        .map_err(|source| LaunchError::Write { path, source })?;
                }
            }
        }
        mark("share-ready");
        // After the layers: a recursive alias of the share carries them.
        vmm::mount_aliases(&plan.aliases)?;
        mark("kernel-ready");
        Ok(plan)
    })();
    if let Err(e) = &result {
        match role {
            Role::Pod => {
                let msg = error_chain(e);
                let _ = record::update(&dir, |r| {
                    r.state = State::Exited;
                    r.finished = Some(record::now());
                    r.exit_reason = Some(format!("preparing failed: {msg}"));
                });
                store::release(&dir);
            }
            Role::PoolMember => {
                let _ = store::remove(&dir);
            }
        }
    }
    result
}

/// What the plan decided, in the pod's record.
pub(super) fn record_plan(plan: &PodPlan) -> Result<(), LaunchError> {
    let dir = &plan.dir;
    record::update(dir, |r| {
        r.cid = Some(plan.cid);
        r.accel = Some(plan.launch.accel);
        r.hypervisor = Some(plan.launch.hypervisor);
        r.endpoint = Some(plan.launch.endpoint.clone());
        r.network = Some(plan.pod.network.clone());
        r.address = plan.guest_net.as_ref().map(|n| n.address);
        r.apps = plan
            .pod
            .apps
            .iter()
            .map(|a| AppSummary::pending(&a.name))
            .collect();
    })?;
    record::update(dir, |r| r.initramfs_bytes = Some(plan.stage1.size))?;
    Ok(())
}
