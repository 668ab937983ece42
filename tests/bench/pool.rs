//! The warm pool: the trivial pod (the baseline's: mount a host volume,
//! write a file) run cold and from the pool, and eight pods started
//! detached at once, cold and from a pool of eight. Each pooled run waits
//! first until the pool is full again, so it measures a warm start (the
//! replacement boots in the background, at a lower priority).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::ctx::{path_str, runs, Ctx};
use crate::report::Report;
use crate::stats::Figure;

const SECTION: &str = "pool";
/// The targets: a pooled start within half a second under TCG,
/// and at least five times faster than a cold one.
const POOLED_WALL: f64 = 0.5;
const SPEEDUP: f64 = 5.0;
const BATCH: usize = 8;

pub fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let data = ctx.host_dir("pool-data")?;
    let manifest = ctx.write_manifest(
        "pool-trivial",
        &json!({
            "volumes": [{"name": "data", "kind": "host", "source": data}],
            "apps": [{"name": "writer", "rootfs": ctx.rootfs, "exec": ["/bin/sh", "-c", "echo hello > /data/out.txt"],
                      "mountPoints": [{"volume": "data", "path": "/data"}]}],
            "network": {"mode": "none"}
        }),
    )?;
    let _ = ctx.ok(&["pool", "stop"]);
    let (mut cold, mut pooled) = (Vec::new(), Vec::new());
    for _ in 0..runs() {
        cold.push(run_rm(ctx, &manifest)?);
    }
    ctx.ok(&["pool", "start", "--size", "1", "--net", "none"])?;
    let result = (|| {
        for _ in 0..runs() {
            wait_until_full(ctx, 1)?;
            pooled.push(run_rm(ctx, &manifest)?);
        }
        Ok::<(), anyhow::Error>(())
    })();
    let _ = ctx.ok(&["pool", "stop"]);
    result?;
    let c = Figure::of("host-ctl run --rm (trivial pod), cold VM, wall", "s", &cold);
    let p = Figure::of(
        "host-ctl run --rm (trivial pod), VM from the warm pool, wall",
        "s",
        &pooled,
    )
    .target(POOLED_WALL, false);
    let speedup = c.median / p.median;
    report.add(SECTION, c);
    report.add(SECTION, p);
    report.add(
        SECTION,
        Figure::of("speed-up cold / pooled (medians)", "×", &[speedup]).target(SPEEDUP, true),
    );
    batch(ctx, report, &manifest)
}

/// Eight `run -d` at once, cold and from a pool of eight; the wall until
/// every one printed its pod's ID.
fn batch(ctx: &Ctx, report: &mut Report, manifest: &Path) -> Result<()> {
    let rounds = runs().min(3);
    let (mut cold, mut pooled) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        cold.push(detach_all(ctx, manifest)?);
    }
    let size = BATCH.to_string();
    ctx.ok(&["pool", "start", "--size", &size, "--net", "none"])?;
    let result = (|| {
        for _ in 0..rounds {
            wait_until_full(ctx, BATCH)?;
            pooled.push(detach_all(ctx, manifest)?);
        }
        Ok::<(), anyhow::Error>(())
    })();
    let _ = ctx.ok(&["pool", "stop"]);
    result?;
    let c = Figure::of("8 × host-ctl run -d at once, cold VMs, wall", "s", &cold);
    let p = Figure::of(
        "8 × host-ctl run -d at once, from a pool of 8, wall",
        "s",
        &pooled,
    );
    let speedup = c.median / p.median;
    report.add(SECTION, c);
    report.add(SECTION, p);
    report.add(
        SECTION,
        Figure::of(
            "8 at once: speed-up cold / pooled (medians)",
            "×",
            &[speedup],
        ),
    );
    Ok(())
}

/// `host-ctl run --rm <manifest>`: its wall time.
fn run_rm(ctx: &Ctx, manifest: &Path) -> Result<f64> {
    let start = Instant::now();
    let out = ctx
        .host_ctl()
        .args(["run", "--rm", path_str(manifest)?])
        .stdin(Stdio::null())
        .output()
        .context("running host-ctl run")?;
    let wall = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "host-ctl run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(wall)
}

/// Starts BATCH detached pods at once; the wall until all printed their
/// IDs. The pods are removed once they are over.
fn detach_all(ctx: &Ctx, manifest: &Path) -> Result<f64> {
    let start = Instant::now();
    let children: Vec<Child> = (0..BATCH)
        .map(|_| {
            ctx.host_ctl()
                .args(["run", "-d", path_str(manifest)?])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting host-ctl run -d")
        })
        .collect::<Result<_>>()?;
    let mut ids = Vec::new();
    for c in children {
        let out = c.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "host-ctl run -d failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ids.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let wall = start.elapsed().as_secs_f64();
    for id in &ids {
        ctx.stop(id);
        let _ = ctx.ok(&["rm", "-f", id]);
    }
    Ok(wall)
}

/// Waits (up to 5 minutes) until `n` members of the pool wait.
fn wait_until_full(ctx: &Ctx, n: usize) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(300);
    loop {
        let status: serde_json::Value =
            serde_json::from_str(&ctx.ok(&["pool", "status", "--format", "json"])?)?;
        let waiting = status["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["state"] == "waiting")
            .count();
        if waiting >= n {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("the pool did not refill to {n} VMs: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
