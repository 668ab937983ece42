//! Figure 1, sizes: the agent binary. It is copied into every pod's
//! initramfs, which the guest kernel unpacks before /init runs, so its size
//! is boot time. (The demo pod's initramfs sizes come from the timeline
//! section, which boots that pod anyway.)

use std::fs;

use anyhow::{Context, Result};

use crate::ctx::Ctx;
use crate::report::Report;
use crate::stats::Figure;

pub fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let agent = fs::metadata(&ctx.agent)
        .with_context(|| format!("reading {}", ctx.agent.display()))?
        .len() as f64;
    report.add(
        "size",
        Figure::of("agent binary (static, stripped)", "bytes", &[agent])
            .target(2.0 * 1024.0 * 1024.0, false),
    );
    Ok(())
}
