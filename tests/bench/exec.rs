//! Figure 5, exec: `host-ctl exec … -- true` end to end through the CLI,
//! as a user or a script pays it: process start, connecting to the agent,
//! the spawn in the guest and the exit status back. One call at a time,
//! then [`CONCURRENT`] at once (a script fanning out, or a health check
//! per container), where every call must succeed: the wall time from the
//! first start to the last exit, and how many succeeded in the worst run.

use std::process::{Child, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::ctx::{runs, Ctx};
use crate::report::Report;
use crate::service::ServicePod;
use crate::stats::Figure;

/// Calls started at once.
const CONCURRENT: usize = 100;

pub fn measure(ctx: &Ctx, pod: &ServicePod, report: &mut Report) -> Result<()> {
    let mut exec = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        ctx.ok(&["exec", &pod.id, "idle", "--", "true"])?;
        exec.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    report.add(
        "exec",
        Figure::of("host-ctl exec <pod> <app> -- true", "ms", &exec),
    );
    Ok(())
}

/// [`CONCURRENT`] calls at once, [`runs`] times. Measured after the
/// agent's idle memory, which a hundred sessions at once could grow.
pub fn concurrent(ctx: &Ctx, pod: &ServicePod, report: &mut Report) -> Result<()> {
    let (mut walls, mut succeeded) = (Vec::new(), Vec::new());
    let mut first_failure = None;
    for _ in 0..runs() {
        let (wall, ok, failure) = all_at_once(ctx, &pod.id)?;
        walls.push(wall);
        succeeded.push(ok as f64);
        first_failure = first_failure.or(failure);
    }
    report.add(
        "exec",
        Figure::of(
            "100 concurrent host-ctl exec <pod> <app> -- true, wall",
            "s",
            &walls,
        ),
    );
    // Every call of every run must succeed: held to the worst run.
    let mut ok = Figure::of(
        "100 concurrent exec: calls that succeeded",
        "calls",
        &succeeded,
    )
    .target(CONCURRENT as f64, true);
    ok.met = Some(ok.min >= CONCURRENT as f64);
    report.add("exec", ok);
    if let Some(f) = first_failure {
        report
            .notes
            .push(format!("exec: a concurrent call failed: {f}"));
    }
    Ok(())
}

/// Starts the calls, then waits for all; the wall time in seconds, how
/// many succeeded, and the first failure's status and stderr.
fn all_at_once(ctx: &Ctx, id: &str) -> Result<(f64, usize, Option<String>)> {
    let start = Instant::now();
    let mut children: Vec<Child> = Vec::with_capacity(CONCURRENT);
    let mut spawn_error = None;
    for _ in 0..CONCURRENT {
        match ctx
            .host_ctl()
            .args(["exec", id, "idle", "--", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => children.push(c),
            Err(e) => {
                spawn_error = Some(e);
                break;
            }
        }
    }
    let (mut ok, mut failure) = (0, None);
    for c in children {
        let out = c.wait_with_output().context("waiting for host-ctl exec")?;
        if out.status.success() {
            ok += 1;
        } else if failure.is_none() {
            let err = String::from_utf8_lossy(&out.stderr);
            failure = Some(format!("{}: {}", out.status, err.trim()));
        }
    }
    let wall = start.elapsed().as_secs_f64();
    if let Some(e) = spawn_error {
        return Err(e).context("starting host-ctl exec");
    }
    Ok((wall, ok, failure))
}
