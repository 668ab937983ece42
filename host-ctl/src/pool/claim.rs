//! `run`'s side of the pool: take a waiting member, prepare the pod into
//! it, claim it. Whatever goes wrong, the pod still runs: in a VM of its
//! own, after a note saying why the pool could not serve it.

use std::path::Path;
use std::time::{Duration, Instant};

use kvmpod_api::layout::CLAIM_VSOCK_PORT;
use kvmpod_api::pool::{CLAIM, CLAIMED};
use kvmpod_api::timeline::Stage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::members::{lock, members, Member, Readiness};
use super::spec::PoolSpec;
use super::{spawn_fill, PoolError};
use crate::agent::{console, vsock};
use crate::launch::pooled::{prepare_claimed, ClaimFailure};
use crate::launch::{LaunchError, PodPlan, RunOptions, VmOrigin};
use crate::pod::record::{self, State};
use crate::ui::text::error_chain;

/// How long a claimed agent may take to answer, and then to serve its API.
const HAND_OVER: Duration = Duration::from_secs(10);

fn note(what: impl std::fmt::Display) {
    crate::ui::progress::say(&format!("host-ctl: pool: {what}"));
}

/// The pod `o` in a VM of the warm pool, prepared and claimed (its agent
/// reads the pod's share next); `None` when there is no pool or it cannot
/// serve this pod, and the pod is to boot a VM of its own.
pub async fn claim(o: &RunOptions, mark: &mut dyn FnMut(&'static str)) -> Option<PodPlan> {
    match PoolSpec::read(&o.state_dir) {
        Ok(Some(_)) => {}
        Ok(None) => return None,
        Err(e) => {
            note(error_chain(&e));
            return None;
        }
    }
    let member = match take(&o.state_dir) {
        Ok(Some(m)) => m,
        Ok(None) => {
            note("no VM of the pool is waiting; the pod boots its own");
            refill(&o.state_dir);
            return None;
        }
        Err(e) => {
            note(error_chain(&e));
            return None;
        }
    };
    let mut pooled = o.clone();
    pooled.origin = VmOrigin::Pooled;
    let plan = match prepare_claimed(&pooled, member.dir.clone(), mark) {
        Ok(plan) => plan,
        Err(ClaimFailure::Untouched(e)) => {
            give_back(&member);
            // Any other error is the pod's own, which its cold start reports.
            if let LaunchError::NotFit(why) = e {
                note(format!("{why}; the pod boots a VM of its own"));
            }
            return None;
        }
        Err(ClaimFailure::Spoiled(e)) => {
            member.discard();
            refill(&o.state_dir);
            note(format!(
                "preparing the pod in pool VM {}: {}; the pod boots a VM of its own",
                member.dir.id,
                error_chain(&e)
            ));
            return None;
        }
    };
    // The VM was booted in the background, at a fill's niceness: its pod
    // runs in the foreground.
    unnice(&member);
    let handed = hand_over(&plan, &member).await;
    refill(&o.state_dir);
    match handed {
        Ok(()) => {
            mark("claimed");
            Some(plan)
        }
        Err(e) => {
            member.discard();
            note(format!(
                "pool VM {} did not take the pod ({e}); the pod boots a VM of its own",
                member.dir.id
            ));
            None
        }
    }
}

/// Takes a waiting member (its record says `prepared` from now, so no other
/// run takes it), removing dead ones on the way.
fn take(state_dir: &Path) -> Result<Option<Member>, PoolError> {
    let Some(_claims) = lock(state_dir, "claim", Duration::from_secs(10))? else {
        return Ok(None);
    };
    for m in members(state_dir)? {
        match m.readiness() {
            Readiness::Waiting => {
                record::update(&m.dir, |r| {
                    r.state = State::Prepared;
                    r.created = record::now();
                    r.claimed = Some(r.created.clone());
                })?;
                return Ok(Some(m));
            }
            Readiness::Dead => m.discard(),
            Readiness::Booting => {}
        }
    }
    Ok(None)
}

/// Returns an untouched member to the pool.
fn give_back(m: &Member) {
    let back = record::update(&m.dir, |r| {
        r.state = State::Pooled;
        r.claimed = None;
    });
    if let Err(e) = back {
        note(format!("returning VM {} to the pool: {e}", m.dir.id));
        m.discard();
    }
}

/// Claims member `m`'s VM for `plan`: the agent answers, then serves its
/// API.
async fn hand_over(plan: &PodPlan, m: &Member) -> Result<(), String> {
    let until = Instant::now() + HAND_OVER;
    let endpoint = &plan.launch.endpoint;
    let exchange = async {
        let mut s = vsock::connect_stream(endpoint, CLAIM_VSOCK_PORT).await?;
        s.write_all(CLAIM).await?;
        let mut answer = vec![0u8; CLAIMED.len()];
        s.read_exact(&mut answer).await?;
        Ok::<bool, std::io::Error>(answer == CLAIMED)
    };
    match tokio::time::timeout(HAND_OVER, exchange).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return Err("it answered something else than its claim".into()),
        Ok(Err(e)) => return Err(format!("claiming it: {e}")),
        Err(_) => return Err(format!("no answer to its claim in {HAND_OVER:?}")),
    }
    let vm = &m.dir;
    let ready = console::wait_until_stage(
        &vm.console_log(),
        Stage::AgentReady,
        &mut || !m.record.vm.is_some_and(|p| p.alive()),
        until,
    )
    .await;
    if ready {
        Ok(())
    } else {
        let progress =
            console::progress(&std::fs::read_to_string(vm.console_log()).unwrap_or_default());
        Err(format!(
            "its agent did not serve the pod: {}",
            progress.stage
        ))
    }
}

/// Sets every thread of the member's processes back to niceness 0.
fn unnice(m: &Member) {
    for p in m.record.processes() {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", p.pid));
        for tid in tasks.into_iter().flatten().flatten() {
            let Some(tid) = tid.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
                continue;
            };
            // SAFETY: setpriority takes plain integers and touches no memory.
            let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, 0) };
            if r != 0 {
                note(format!(
                    "setting thread {tid} of pool VM {} to niceness 0: {}",
                    m.dir.id,
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
}

/// Boots the member that replaces the one taken (or removed), in the
/// background.
fn refill(state_dir: &Path) {
    if let Err(e) = spawn_fill(state_dir) {
        note(format!("starting a fill: {}", error_chain(&e)));
    }
}
