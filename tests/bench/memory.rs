//! Figure 6, memory: the agent's resident set (it is PID 1 in every pod, so
//! it is paid per pod), idle with two apps and where that goes, and with 16
//! apps running, to show what each supervised app adds.

use anyhow::{anyhow, Result};
use serde_json::{json, Value};

use crate::ctx::Ctx;
use crate::report::Report;
use crate::service::ServicePod;
use crate::stats::Figure;

/// The agent's RSS in the service pod (two apps, idle), and its parts.
pub fn idle(ctx: &Ctx, pod: &ServicePod, report: &mut Report) -> Result<()> {
    let mut rss = Vec::new();
    for _ in 0..3 {
        rss.push(agent_rss_kib(ctx, &pod.id, "idle")?);
    }
    report.add(
        "memory",
        Figure::of("agent RSS, idle (2 apps)", "KiB", &rss).target(1024.0, false),
    );
    // Where it goes. The agent runs from the initramfs, a tmpfs: its code
    // pages count as shared memory, not as file pages.
    let status = ctx.ok(&["exec", &pod.id, "idle", "--", "cat", "/proc/1/status"])?;
    for (field, what) in [
        ("RssShmem:", "of which the binary's pages (RssShmem)"),
        ("RssAnon:", "of which heap and stacks (RssAnon)"),
        ("RssFile:", "of which other file pages (RssFile)"),
    ] {
        let kib = status_kib(&status, field)?;
        report.add("memory", Figure::of(what, "KiB", &[kib]));
    }
    Ok(())
}

/// The agent's RSS with 16 apps running, in a pod of its own.
pub fn many_apps(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let apps: Vec<Value> = (0..16)
        .map(|i| json!({"name": format!("app-{i}"), "rootfs": ctx.rootfs, "exec": ["/bin/sh", "-c", "exec sleep 1000000"]}))
        .collect();
    let manifest = ctx.write_manifest("sixteen", &json!({"apps": apps}))?;
    let id = ctx.run_detached(&manifest)?;
    let rss: Result<Vec<f64>> = (0..3).map(|_| agent_rss_kib(ctx, &id, "app-0")).collect();
    ctx.stop(&id);
    report.add(
        "memory",
        Figure::of("agent RSS, 16 apps running", "KiB", &rss?),
    );
    Ok(())
}

/// The agent's VmRSS, read by an exec in `app` (PID 1 is the agent).
fn agent_rss_kib(ctx: &Ctx, id: &str, app: &str) -> Result<f64> {
    let status = ctx.ok(&["exec", id, app, "--", "cat", "/proc/1/status"])?;
    status_kib(&status, "VmRSS:")
}

/// A `/proc/<pid>/status` figure in KiB.
fn status_kib(status: &str, field: &str) -> Result<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no {field} in /proc/1/status"))
}
