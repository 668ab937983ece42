//! The warm pool's side of preparing: a VM booted before its pod is known
//! (a pool member), and a pod prepared into such a VM (a claim).
//!
//! A member is planned like a pod with no apps, no volumes and the pool's
//! network, in the pooled layout ([`VmOrigin::Pooled`]): the pod share and
//! one volumes share, and an agent that waits to be claimed. A pod fits a
//! member when, planned in the same layout with the member's CID, it gives
//! the same command lines: the same hypervisor, kernel, stage1 image,
//! memory, vCPUs, accelerator, vsock and network. Nothing else is compared,
//! so nothing that decides the VM can differ.

use kvmpod_api::manifest::VolumeKind;
use kvmpod_api::tag::nine_p_tag;

use super::draft::{draft, finish, Check};
use super::prepare::{prepare_as, record_plan, Role};
use super::{guest, LaunchError, PodPlan, PodSource, RunOptions, VmOrigin};
use crate::image::ImageStore;
use crate::pod::record;
use crate::pod::{names, PodDir, VmLaunch};
use crate::vmm::{self, Alias, Program};

/// Prepares pool member `dir`: its directory, record (pooled), CID lease,
/// empty shares and `launch.json`; the caller starts the VM. On failure
/// nothing is left.
pub fn prepare_member(o: &RunOptions, dir: PodDir) -> Result<PodPlan, LaunchError> {
    if !matches!(o.source, PodSource::PoolMember) || o.origin != VmOrigin::Pooled {
        return Err(LaunchError::Host(
            "a pool member is planned with no pod, in the pooled layout".into(),
        ));
    }
    prepare_as(o, dir, Role::PoolMember, &mut |_| {})
}

/// Why a pod could not be prepared into a pool member.
#[derive(Debug)]
pub enum ClaimFailure {
    /// Before anything changed (the pod does not fit, or its manifest or
    /// the host is at fault, which a cold start reports): the member can
    /// go back to the pool.
    Untouched(LaunchError),
    /// After the member was changed: it must be discarded.
    Spoiled(LaunchError),
}

/// Prepares pod `o` into pool member `dir`, which the caller took from the
/// pool. A pod that does not fit is refused with [`LaunchError::NotFit`]
/// before anything changes.
pub fn prepare_claimed(
    o: &RunOptions,
    dir: PodDir,
    mark: &mut dyn FnMut(&'static str),
) -> Result<PodPlan, ClaimFailure> {
    let plan = plan_claim(o, dir).map_err(ClaimFailure::Untouched)?;
    mark("validated");
    write_claim(o, &plan).map_err(ClaimFailure::Spoiled)?;
    mark("share-ready");
    Ok(plan)
}

/// The pod's plan on the member's CID, if it fits the member's VM.
fn plan_claim(o: &RunOptions, dir: PodDir) -> Result<PodPlan, LaunchError> {
    if o.origin != VmOrigin::Pooled {
        return Err(LaunchError::Host(
            "a claim is planned in the pooled layout".into(),
        ));
    }
    let member = VmLaunch::read(&dir)?;
    let cid = record::read(&dir)?
        .cid
        .ok_or_else(|| LaunchError::NotFit(format!("pool member {} has no CID", dir.id)))?;
    // The rate the member's guest was told, not a new measurement that
    // would differ from it by a few kHz.
    let o = &RunOptions {
        tsc_khz: member.tsc_khz,
        ..o.clone()
    };
    let d = draft(o, dir, Check::Strict)?;
    let mut plan = finish(o, d, cid)?;
    fits(&plan, &member)?;
    // The member's VM and processes, with this pod's timeouts and logs.
    plan.launch = VmLaunch {
        boot_timeout_secs: plan.launch.boot_timeout_secs,
        grace_ms: plan.launch.grace_ms,
        log_rotation: plan.launch.log_rotation,
        ..member
    };
    Ok(plan)
}

/// The pod's record, share and volume binds in the member.
fn write_claim(o: &RunOptions, plan: &PodPlan) -> Result<(), LaunchError> {
    let dir = plan.dir.clone();
    if let Some(name) = &o.name {
        names::claim(&o.state_dir, name, &dir.id)?;
    }
    record::update(&dir, |r| {
        r.name = o.name.clone();
        r.manifest = o.shown_source();
        r.detached = o.detach;
        r.created = record::now();
        if let PodSource::Image(run) = &o.source {
            r.manifest = dir.manifest();
            r.image = Some(run.image.clone());
        }
    })?;
    if !plan.images.is_empty() {
        ImageStore::open(&o.state_dir)?.lease(&dir.id, &plan.images)?;
    }
    plan.launch.write(&dir)?;
    record_plan(plan)?;
    guest::create(o, plan)?;
    vmm::mount_aliases(&volume_binds(plan))?;
    Ok(())
}

/// Whether `plan` would boot the VM `member` is; why not when it would not.
fn fits(plan: &PodPlan, member: &VmLaunch) -> Result<(), LaunchError> {
    let launch = &plan.launch;
    let why = if plan.pod.sandbox {
        Some("a sandbox pod's apps share is not in a pooled VM".to_string())
    } else if launch.hypervisor != member.hypervisor {
        Some(format!(
            "the pool runs {:?}, the pod {:?}",
            member.hypervisor, launch.hypervisor
        ))
    } else if !launch.relayed_ports.is_empty()
        || launch.tap_wiring.is_some()
        || launch.net_backend != member.net_backend
    {
        Some("the pod's network is not the pool's (published ports, a tap or another mode)".into())
    } else if launch.vm != member.vm {
        Some(format!(
            "the pod's VM differs from the pool's (memory, vCPUs, kernel, stage1 image or accelerator): {}",
            first_difference(&launch.vm, &member.vm)
        ))
    } else if launch.vsock_backend != member.vsock_backend {
        Some("the pod's vsock differs from the pool's".into())
    } else {
        None
    };
    match why {
        Some(why) => Err(LaunchError::NotFit(why)),
        None => Ok(()),
    }
}

/// The first argument where the pod's VM and the pool's differ, for the
/// note that says why the pod boots its own.
fn first_difference(pod: &Program, pool: &Program) -> String {
    if pod.program != pool.program {
        return format!(
            "{} rather than {}",
            pod.program.display(),
            pool.program.display()
        );
    }
    let n = pod.args.len().max(pool.args.len());
    (0..n)
        .find_map(|i| {
            let (a, b) = (pod.args.get(i), pool.args.get(i));
            (a != b).then(|| {
                format!(
                    "{} rather than {}",
                    a.map_or("(nothing)", String::as_str),
                    b.map_or("(nothing)", String::as_str)
                )
            })
        })
        .unwrap_or_default()
}

/// Each host volume bound into the volumes share under its 9p tag's name,
/// read-only when exported so (the guest applies the same rule again).
fn volume_binds(plan: &PodPlan) -> Vec<Alias> {
    plan.pod
        .volumes
        .iter()
        .filter(|v| v.kind == VolumeKind::Host)
        .filter_map(|v| {
            Some(Alias {
                source: v.source.clone()?,
                path: plan.dir.pool_volumes().join(nine_p_tag(&v.name)),
                read_only: plan.pod.exported_read_only(v),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(args: &[&str]) -> Program {
        Program {
            program: "/usr/bin/qemu-system-x86_64".into(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn the_first_difference_is_named() {
        let pool = vm(&["-m", "512", "-append", "quiet tsc_early_khz=2596131 x=1"]);
        let other = vm(&["-m", "256", "-append", "quiet tsc_early_khz=2596131 x=1"]);
        assert_eq!(first_difference(&other, &pool), "256 rather than 512");
        let tsc = vm(&["-m", "512", "-append", "quiet tsc_early_khz=2596166 x=1"]);
        assert_eq!(
            first_difference(&tsc, &pool),
            "quiet tsc_early_khz=2596166 x=1 rather than quiet tsc_early_khz=2596131 x=1"
        );
    }
}
