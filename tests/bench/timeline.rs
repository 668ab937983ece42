//! Figure 2, the demo pod's boot timeline on the guest clock: when each
//! stage of the boot ends, from the kernel's start to power-off, and the
//! agent's own share of it. Also the demo pod's initramfs size, and what
//! compressing that initramfs costs or saves (its size against the kernel's
//! time to unpack it). The phases' medians become the chart.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::ctx::{runs, stamp, stamps_with_prefix, Ctx};
use crate::report::Report;
use crate::stats::Figure;

/// A phase of the boot: its name, start and end in seconds of guest clock.
pub type Phase = (String, f64, f64);

const SECTION: &str = "boot timeline (demo pod, guest clock)";
const COMPRESSION: &str = "initramfs compression (demo pod)";

/// The phases, each named for the mark that ends it, in boot order; the
/// marks of one boot are read by [`marks`] in this order.
const NAMES: [&str; 10] = [
    "kernel start → /init",
    "/init → kernel modules loaded (stage1)",
    "→ root moved off the initramfs",
    "→ guest file systems mounted",
    "→ pod share mounted, settings and manifest read",
    "→ agent ready (vsock served)",
    "→ volumes mounted",
    "→ first app exec",
    "→ last app exit",
    "→ power-off",
];
/// Indices into [`NAMES`] of the marks the agent's own share is made of.
const INIT: usize = 0;
const MODULES_LOADED: usize = 1;
const AGENT_READY: usize = 5;
const POWER_OFF: usize = 9;

/// The demo pod's boots: per mark, its time in each run; and per run, the
/// initramfs size and host-ctl's wall time.
struct Boots {
    samples: Vec<Vec<f64>>,
    sizes: Vec<f64>,
    walls: Vec<f64>,
}

/// Boots the demo pod [`runs`] times; the timeline's phases for the chart.
pub fn run(ctx: &Ctx, report: &mut Report) -> Result<Vec<Phase>> {
    let manifest = demo_manifest(ctx)?;
    let boots = boot(ctx, &manifest)?;
    report.add(
        "size",
        Figure::of(
            "stage1 image (uncompressed, the default)",
            "bytes",
            &boots.sizes,
        ),
    );
    compression(ctx, report, &manifest, &boots)?;
    let phases = phases(report, &boots.samples);
    agent_share(report, &boots.samples);
    Ok(phases)
}

/// examples/demo/pod.json with its host volume and rootfs in the work
/// directory, so the bench leaves the example untouched.
fn demo_manifest(ctx: &Ctx) -> Result<PathBuf> {
    let demo = ctx.work.join("demo");
    fs::create_dir_all(demo.join("data"))
        .with_context(|| format!("creating {}", demo.display()))?;
    let path = ctx.repo.join("examples/demo/pod.json");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut m: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    m["volumes"][0]["source"] = json!(demo.join("data"));
    for app in m["apps"].as_array_mut().unwrap_or(&mut Vec::new()) {
        app["rootfs"] = json!(ctx.rootfs);
    }
    ctx.write_manifest("demo", &m)
}

fn boot(ctx: &Ctx, manifest: &Path) -> Result<Boots> {
    let mut boots = Boots {
        samples: vec![Vec::new(); NAMES.len()],
        sizes: Vec::new(),
        walls: Vec::new(),
    };
    for _ in 0..runs() {
        let (wall, rec, dir) = ctx.run_attached(manifest)?;
        boots.walls.push(wall);
        boots
            .sizes
            .push(rec["initramfsBytes"].as_f64().unwrap_or(f64::NAN));
        for (slot, v) in boots.samples.iter_mut().zip(marks(&rec, &dir)) {
            slot.push(v);
        }
        boots.samples[POWER_OFF].retain(|v| v.is_finite());
    }
    Ok(boots)
}

/// One boot's marks, in the order of [`NAMES`]; NaN where one is missing.
fn marks(rec: &Value, dir: &Path) -> [f64; NAMES.len()] {
    let s = |n: &str| stamp(rec, n).unwrap_or(f64::NAN);
    let first_app = stamps_with_prefix(rec, "app-started:")
        .into_iter()
        .fold(f64::INFINITY, f64::min);
    let last_exit = stamps_with_prefix(rec, "app-exited:")
        .into_iter()
        .fold(f64::NAN, f64::max);
    [
        s("init"),
        s("modules-loaded"),
        s("root-switched"),
        s("base-mounted"),
        s("config-read"),
        s("agent-ready"),
        s("volumes-mounted"),
        first_app,
        last_exit,
        power_off_at(dir).unwrap_or(f64::NAN),
    ]
}

/// The agent's `stage power-off at 4.123456s` console line: the record's
/// timeline ends before the guest powers off.
fn power_off_at(pod_dir: &Path) -> Option<f64> {
    let console = fs::read_to_string(pod_dir.join("console.log")).ok()?;
    console
        .lines()
        .filter_map(|l| l.split("stage power-off at ").nth(1))
        .filter_map(|t| t.trim().trim_end_matches('s').parse().ok())
        .next_back()
}

/// The compression trade-off, measured: the same pod with a gzipped
/// initramfs, against the uncompressed boots.
fn compression(ctx: &Ctx, report: &mut Report, manifest: &Path, boots: &Boots) -> Result<()> {
    let (mut gz_sizes, mut gz_init, mut gz_walls) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs().min(3) {
        let (wall, rec, _) = ctx.run_attached_with(manifest, &["--gzip-initramfs"])?;
        gz_sizes.push(rec["initramfsBytes"].as_f64().unwrap_or(f64::NAN));
        gz_init.push(stamp(&rec, "init").unwrap_or(f64::NAN));
        gz_walls.push(wall);
    }
    report.add(
        "size",
        Figure::of("stage1 image with --gzip-initramfs", "bytes", &gz_sizes),
    );
    report.add(
        COMPRESSION,
        Figure::of("host-ctl run wall, uncompressed", "s", &boots.walls),
    );
    report.add(
        COMPRESSION,
        Figure::of("host-ctl run wall, --gzip-initramfs", "s", &gz_walls),
    );
    report.add(
        COMPRESSION,
        Figure::of(
            "kernel start → /init, uncompressed",
            "s",
            &boots.samples[INIT],
        ),
    );
    report.add(
        COMPRESSION,
        Figure::of("kernel start → /init, --gzip-initramfs", "s", &gz_init),
    );
    Ok(())
}

/// Reports when each phase ends; the phases whose end was seen, each from
/// the previous one's median end to its own.
fn phases(report: &mut Report, samples: &[Vec<f64>]) -> Vec<Phase> {
    let mut phases = Vec::new();
    let mut prev = 0.0;
    for (name, s) in NAMES.iter().zip(samples) {
        let at = Figure::of("", "", s).median;
        report.add(SECTION, Figure::of(&format!("{name} (at)"), "s", s));
        if at.is_finite() {
            phases.push((name.to_string(), prev, at));
            prev = at;
        }
    }
    phases
}

/// The agent's own share: /init to agent ready, less module loading (the
/// kernel's work, however the agent asks for it; the agent loads modules
/// first, so that is everything up to `modules-loaded`).
fn agent_share(report: &mut Report, samples: &[Vec<f64>]) {
    let own: Vec<f64> = (0..samples[INIT].len())
        .map(|r| {
            let get = |i: usize| samples[i].get(r).copied().unwrap_or(f64::NAN);
            (get(AGENT_READY) - get(MODULES_LOADED)) * 1000.0
        })
        .collect();
    report.add(
        SECTION,
        Figure::of(
            "agent's own share: /init → ready, less module loading",
            "ms",
            &own,
        )
        .target(10.0, false),
    );
}
