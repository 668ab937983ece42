//! Figure 5, exec: `host-ctl exec … -- true` end to end through the CLI,
//! as a user or a script pays it: process start, connecting to the agent,
//! the spawn in the guest and the exit status back.

use std::time::Instant;

use anyhow::Result;

use crate::ctx::Ctx;
use crate::report::Report;
use crate::service::ServicePod;
use crate::stats::Figure;

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
