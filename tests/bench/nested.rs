//! Figure 9, pod start on a real KVM host: the trivial pod under lkvm and
//! under QEMU with KVM and AF_VSOCK, inside the nested test host (a TCG
//! guest that is a KVM host), beside QEMU with TCG on this host. The nested
//! host is emulated itself, so its figures show the backends side by side
//! on one machine, not what a bare-metal KVM host would take.
//!
//! The outer bench runs `tests/nested/run -- kvmpod-bench --nested-inner`;
//! the inner one times the pods in L1 and prints one JSON line per figure.

use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::ctx::{runs, Ctx};
use crate::report::Report;
use crate::stats::Figure;

/// The trivial pod of the baseline section: mount a host volume, write.
fn trivial(ctx: &Ctx) -> Result<std::path::PathBuf> {
    let data = ctx.host_dir("nested-data")?;
    ctx.write_manifest(
        "nested-trivial",
        &json!({
            "volumes": [{"name": "data", "kind": "host", "source": data}],
            "apps": [{"name": "writer", "rootfs": ctx.rootfs, "exec": ["/bin/sh", "-c", "echo hello > /data/out.txt"],
                      "mountPoints": [{"volume": "data", "path": "/data"}]}]
        }),
    )
}

/// Inside L1: times the trivial pod under each backend, prints the samples.
pub fn inner() -> Result<()> {
    let ctx = Ctx::new()?;
    let manifest = trivial(&ctx)?;
    for (name, extra) in [
        ("lkvm", &["--hypervisor", "lkvm"][..]),
        ("qemu-kvm", &["--accel", "kvm", "--vsock", "vhost"][..]),
    ] {
        let mut samples = Vec::new();
        for _ in 0..runs() {
            let (wall, _, _) = ctx.run_attached_with(&manifest, extra)?;
            samples.push(wall);
        }
        println!("{}", json!({"backend": name, "samples": samples}));
    }
    Ok(())
}

/// On this host: runs the inner bench in L1 and reports its figures.
pub fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let manifest = trivial(ctx)?;
    let mut tcg = Vec::new();
    for _ in 0..runs() {
        tcg.push(ctx.run_attached(&manifest)?.0);
    }
    let start = Instant::now();
    let out = Command::new(ctx.repo.join("tests/nested/run"))
        .args(["--timeout", "1200", "--"])
        .arg(std::env::current_exe().context("finding kvmpod-bench")?)
        .arg("--nested-inner")
        .env("KVMPOD_HOST_CTL", ctx.host_ctl_path())
        .env("KVMPOD_AGENT", &ctx.agent)
        .env("KVMPOD_NESTED_VERBOSE", "1")
        .output()
        .context("running tests/nested/run")?;
    let whole = start.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "the nested bench failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
    }
    report.add(
        "nested",
        Figure::of("QEMU+TCG on this host (trivial pod), wall", "s", &tcg),
    );
    for line in stdout.lines().filter(|l| l.starts_with('{')) {
        let v: Value = serde_json::from_str(line).context("an inner figure")?;
        let samples: Vec<f64> = v["samples"]
            .as_array()
            .ok_or_else(|| anyhow!("no samples in {line}"))?
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        let name = match v["backend"].as_str() {
            Some("lkvm") => "lkvm+KVM in L1 (trivial pod), wall",
            _ => "QEMU+KVM, AF_VSOCK in L1 (trivial pod), wall",
        };
        report.add("nested", Figure::of(name, "s", &samples));
    }
    let l1_ready = stderr
        .lines()
        .find_map(|l| l.strip_prefix("nested: stage command-started (uptime "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or_else(|| anyhow!("no command-started stage from L1:\n{stderr}"))?;
    report.add(
        "nested",
        Figure::of("L1 kernel start to command start", "s", &[l1_ready]),
    );
    report.add("nested", Figure::of("whole nested run", "s", &[whole]));
    Ok(())
}
