//! `kvmpod-bench` (`make bench`): kvmpod's speed and size, measured.
//!
//! Every figure is a median of several runs with min and max; comparisons
//! are ratios of figures measured in the same run. The table is printed,
//! the figures written to `target/bench/results.json`, and the demo pod's
//! boot timeline drawn to `target/bench/boot-timeline.png`.

mod chart;
mod stats;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use host_ctl::agent::vsock::{connect, connect_hybrid, Endpoint};
use kvmpod_api::layout::{DEFAULT_VSOCK_PORT, FORWARD_VSOCK_PORT};
use kvmpod_api::protocol::agent_ttrpc::AgentClient;
use kvmpod_api::protocol::{attach_input, AttachInput, StatusRequest};
use serde_json::{json, Value};
use stats::{fmt, Figure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs of each whole-pod measurement.
fn runs() -> usize {
    std::env::var("KVMPOD_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

struct Ctx {
    repo: PathBuf,
    out: PathBuf,
    work: PathBuf,
    state: PathBuf,
    host_ctl: PathBuf,
    agent: PathBuf,
    rootfs: PathBuf,
}

impl Ctx {
    fn new() -> Result<Ctx> {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or_else(|| anyhow!("no repository"))?
            .to_path_buf();
        let out = repo.join("target/bench");
        let work = out.join("work");
        let state = out.join("state");
        let _ = fs::remove_dir_all(&work);
        let _ = fs::remove_dir_all(state.join("pods"));
        fs::create_dir_all(&work)?;
        let host_ctl = std::env::var_os("KVMPOD_HOST_CTL")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join("target/release/host-ctl"));
        let agent = std::env::var_os("KVMPOD_AGENT")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join("target/x86_64-unknown-linux-musl/agent/kvmpod-agent"));
        for p in [&host_ctl, &agent] {
            if !p.is_file() {
                bail!(
                    "{} is not built: run `make build` (make bench does)",
                    p.display()
                );
            }
        }
        let rootfs = work.join("rootfs");
        let st = Command::new(repo.join("scripts/mkroot.sh"))
            .arg(&rootfs)
            .status()?;
        if !st.success() {
            bail!("scripts/mkroot.sh failed: run `make deps`");
        }
        Ok(Ctx {
            repo,
            out,
            work,
            state,
            host_ctl,
            agent,
            rootfs,
        })
    }

    fn host_ctl(&self) -> Command {
        let mut c = Command::new(&self.host_ctl);
        c.arg("--state-dir")
            .arg(&self.state)
            .env("KVMPOD_AGENT", &self.agent);
        c
    }

    /// `host-ctl <args>`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.host_ctl().args(args).stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!(
                "host-ctl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn write_manifest(&self, name: &str, m: &Value) -> Result<PathBuf> {
        let p = self.work.join(format!("{name}.json"));
        fs::write(&p, serde_json::to_vec_pretty(m)?)?;
        Ok(p)
    }

    fn host_dir(&self, name: &str) -> Result<PathBuf> {
        let d = self.work.join(name);
        fs::create_dir_all(&d)?;
        Ok(d)
    }

    /// The newest pod's directory.
    fn newest_pod(&self) -> Result<PathBuf> {
        host_ctl::pod::store::all_dirs(&self.state)?
            .pop()
            .map(|d| d.path)
            .ok_or_else(|| anyhow!("no pod was created"))
    }

    fn record(&self, pod_dir: &Path) -> Result<Value> {
        Ok(serde_json::from_slice(&fs::read(
            pod_dir.join("state.json"),
        )?)?)
    }

    /// Runs a pod attached; its wall time and its record.
    fn run_attached(&self, manifest: &Path) -> Result<(f64, Value, PathBuf)> {
        self.run_attached_with(manifest, &[])
    }

    fn run_attached_with(&self, manifest: &Path, extra: &[&str]) -> Result<(f64, Value, PathBuf)> {
        let start = Instant::now();
        let out = self
            .host_ctl()
            .arg("run")
            .args(extra)
            .arg(manifest)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        let wall = start.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!(
                "host-ctl run {} failed: {}",
                manifest.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let dir = self.newest_pod()?;
        Ok((wall, self.record(&dir)?, dir))
    }
}

/// Seconds of a named stamp in a record's timeline.
fn stamp(record: &Value, name: &str) -> Option<f64> {
    record["timeline"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["seconds"].as_f64())
}

fn stamps_with_prefix(record: &Value, prefix: &str) -> Vec<f64> {
    record["timeline"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
                .filter_map(|e| e["seconds"].as_f64())
                .collect()
        })
        .unwrap_or_default()
}

/// The agent's `stage power-off at 4.123456s` console line.
fn power_off_at(pod_dir: &Path) -> Option<f64> {
    let console = fs::read_to_string(pod_dir.join("console.log")).ok()?;
    console
        .lines()
        .filter_map(|l| l.split("stage power-off at ").nth(1))
        .filter_map(|t| t.trim().trim_end_matches('s').parse().ok())
        .next_back()
}

#[derive(Default)]
struct Report {
    sections: Vec<(String, Vec<Figure>)>,
    notes: Vec<String>,
}

impl Report {
    fn add(&mut self, section: &str, f: Figure) {
        eprintln!(
            "bench: {section}: {} = {} {} (min {}, max {})",
            f.name,
            fmt(f.median),
            f.unit,
            fmt(f.min),
            fmt(f.max)
        );
        match self.sections.iter_mut().find(|s| s.0 == section) {
            Some(s) => s.1.push(f),
            None => self.sections.push((section.to_string(), vec![f])),
        }
    }

    fn print(&self) {
        println!(
            "{:<58} {:>10} {:>10} {:>10} {:>8} {:>5}  target",
            "figure", "median", "min", "max", "unit", "runs"
        );
        for (section, figures) in &self.sections {
            println!("-- {section}");
            for f in figures {
                let target = match (&f.target, f.met) {
                    (Some(t), Some(true)) => format!("{t} met"),
                    (Some(t), Some(false)) => format!("{t} MISSED"),
                    _ => String::new(),
                };
                let p99 = f
                    .p99
                    .map(|p| format!(" (p99 {})", fmt(p)))
                    .unwrap_or_default();
                println!(
                    "{:<58} {:>10} {:>10} {:>10} {:>8} {:>5}  {target}{p99}",
                    f.name,
                    fmt(f.median),
                    fmt(f.min),
                    fmt(f.max),
                    f.unit,
                    f.runs
                );
            }
        }
        for n in &self.notes {
            println!("note: {n}");
        }
    }
}

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvmpod-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench() -> Result<()> {
    let started = Instant::now();
    let ctx = Ctx::new()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut report = Report::default();
    let machine = machine_line();
    eprintln!("bench: {machine}");

    // KVMPOD_BENCH_ONLY=baseline,logs,... runs some sections, for work on
    // one figure; the results are then partial and no chart is drawn.
    let only = std::env::var("KVMPOD_BENCH_ONLY").ok();
    let wanted = |s: &str| only.as_deref().is_none_or(|o| o.split(',').any(|w| w == s));
    if wanted("sizes") {
        sizes(&ctx, &mut report)?;
    }
    let phases = if wanted("timeline") {
        demo_timeline(&ctx, &mut report)?
    } else {
        Vec::new()
    };
    if wanted("baseline") {
        baseline(&ctx, &mut report)?;
    }
    if wanted("service") {
        rt.block_on(service_pod(&ctx, &mut report))?;
    }
    if wanted("memory") {
        many_apps_memory(&ctx, &mut report)?;
    }
    if wanted("scale") {
        scale(&ctx, &mut report)?;
    }

    report.notes.push(format!(
        "bench took {:.0} s; {machine}",
        started.elapsed().as_secs_f64()
    ));
    report.print();
    let json = json!({
        "machine": machine,
        "date": humantime_now(),
        "sections": report.sections.iter().map(|(s, f)| json!({"section": s, "figures": f})).collect::<Vec<_>>(),
        "timeline": phases.iter().map(|(n, a, b)| json!({"phase": n, "start": a, "end": b})).collect::<Vec<_>>(),
        "notes": report.notes,
    });
    fs::write(
        ctx.out.join("results.json"),
        serde_json::to_vec_pretty(&json)?,
    )?;
    let png = ctx.out.join("boot-timeline.png");
    if !phases.is_empty() {
        chart::timeline(&png, "kvmpod demo pod: guest boot timeline", &phases)?;
    }
    println!(
        "figures: {}\nchart:   {}",
        ctx.out.join("results.json").display(),
        png.display()
    );
    Ok(())
}

fn humantime_now() -> String {
    let out = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%dT%H:%M:%SZ")
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// CPU model, cores, memory and the accelerator host-ctl picks.
fn machine_line() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024 / 1024)
        .unwrap_or(0);
    let accel = host_ctl::vmm::accel::choose(host_ctl::vmm::accel::AccelRequest::Auto)
        .map(|c| format!("{} ({})", c.accel.name(), c.reason))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem} GiB; accelerator {accel}")
}

/// 1. The agent's and the demo initramfs's sizes.
fn sizes(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let agent = fs::metadata(&ctx.agent)?.len() as f64;
    report.add(
        "size",
        Figure::of("agent binary (static, stripped)", "bytes", &[agent])
            .target(2.0 * 1024.0 * 1024.0, false),
    );
    Ok(())
}

fn demo_manifest(ctx: &Ctx) -> Result<PathBuf> {
    let demo = ctx.work.join("demo");
    fs::create_dir_all(demo.join("data"))?;
    let text = fs::read_to_string(ctx.repo.join("examples/demo/pod.json"))?;
    let mut m: Value = serde_json::from_str(&text)?;
    m["volumes"][0]["source"] = json!(demo.join("data"));
    for app in m["apps"].as_array_mut().unwrap_or(&mut Vec::new()) {
        app["rootfs"] = json!(ctx.rootfs);
    }
    ctx.write_manifest("demo", &m)
}

/// 2. The demo pod's boot timeline, and its initramfs size.
fn demo_timeline(ctx: &Ctx, report: &mut Report) -> Result<Vec<(String, f64, f64)>> {
    let manifest = demo_manifest(ctx)?;
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); 10];
    let mut sizes = Vec::new();
    let mut walls = Vec::new();
    for _ in 0..runs() {
        let (wall, rec, dir) = ctx.run_attached(&manifest)?;
        walls.push(wall);
        sizes.push(rec["initramfsBytes"].as_f64().unwrap_or(f64::NAN));
        let s = |n: &str| stamp(&rec, n).unwrap_or(f64::NAN);
        let first_app = stamps_with_prefix(&rec, "app-started:")
            .into_iter()
            .fold(f64::INFINITY, f64::min);
        let last_exit = stamps_with_prefix(&rec, "app-exited:")
            .into_iter()
            .fold(f64::NAN, f64::max);
        let values = [
            s("init"),
            s("config-read"),
            s("modules-loaded"),
            s("root-switched"),
            s("base-mounted"),
            s("agent-ready"),
            s("volumes-mounted"),
            first_app,
            last_exit,
            power_off_at(&dir).unwrap_or(f64::NAN),
        ];
        for (slot, v) in samples.iter_mut().zip(values) {
            slot.push(v);
        }
        samples[9].retain(|v| v.is_finite());
    }
    report.add(
        "size",
        Figure::of(
            "demo pod initramfs (uncompressed, the default)",
            "bytes",
            &sizes,
        ),
    );
    // The compression trade-off, measured: the same pod with a gzipped
    // initramfs.
    let (mut gz_sizes, mut gz_init, mut gz_walls) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs().min(3) {
        let (wall, rec, _) = ctx.run_attached_with(&manifest, &["--gzip-initramfs"])?;
        gz_sizes.push(rec["initramfsBytes"].as_f64().unwrap_or(f64::NAN));
        gz_init.push(stamp(&rec, "init").unwrap_or(f64::NAN));
        gz_walls.push(wall);
    }
    report.add(
        "size",
        Figure::of(
            "demo pod initramfs with --gzip-initramfs",
            "bytes",
            &gz_sizes,
        ),
    );
    report.add(
        "initramfs compression (demo pod)",
        Figure::of("host-ctl run wall, uncompressed", "s", &walls),
    );
    report.add(
        "initramfs compression (demo pod)",
        Figure::of("host-ctl run wall, --gzip-initramfs", "s", &gz_walls),
    );
    report.add(
        "initramfs compression (demo pod)",
        Figure::of("kernel start → /init, uncompressed", "s", &samples[0]),
    );
    report.add(
        "initramfs compression (demo pod)",
        Figure::of("kernel start → /init, --gzip-initramfs", "s", &gz_init),
    );
    let names = [
        "kernel start → /init",
        "/init → settings and manifest read",
        "→ kernel modules loaded",
        "→ root moved off the initramfs",
        "→ guest file systems mounted",
        "→ agent ready (vsock served)",
        "→ volumes mounted",
        "→ first app exec",
        "→ last app exit",
        "→ power-off",
    ];
    let mut phases = Vec::new();
    let medians: Vec<f64> = samples
        .iter()
        .map(|s| Figure::of("", "", s).median)
        .collect();
    let mut prev = 0.0;
    for (i, name) in names.iter().enumerate() {
        let at = medians[i];
        report.add(
            "boot timeline (demo pod, guest clock)",
            Figure::of(&format!("{name} (at)"), "s", &samples[i]),
        );
        if at.is_finite() {
            phases.push((name.to_string(), prev, at));
            prev = at;
        }
    }
    // The agent's own share: /init to agent ready, less module loading.
    let own: Vec<f64> = (0..samples[0].len())
        .map(|r| {
            let get = |i: usize| samples[i].get(r).copied().unwrap_or(f64::NAN);
            ((get(5) - get(0)) - (get(2) - get(1))) * 1000.0
        })
        .collect();
    report.add(
        "boot timeline (demo pod, guest clock)",
        Figure::of(
            "agent's own share: /init → ready, less module loading",
            "ms",
            &own,
        )
        .target(10.0, false),
    );
    Ok(phases)
}

/// Splits a shell-quoted line as `host-ctl args` prints it.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    cur.push(q);
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ' ' if in_word => {
                words.push(std::mem::take(&mut cur));
                in_word = false;
            }
            ' ' => {}
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Figure 3: the trivial pod under host-ctl against a busybox-init VM doing
/// the same module loads, 9p mount and exec on the same QEMU command line.
fn baseline(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let data = ctx.host_dir("trivial-data")?;
    let manifest = ctx.write_manifest(
        "trivial",
        &json!({
            "volumes": [{"name": "data", "kind": "host", "source": data}],
            "apps": [{"name": "writer", "rootfs": ctx.rootfs, "exec": ["/bin/sh", "-c", "echo hello > /data/out.txt"],
                      "mountPoints": [{"volume": "data", "path": "/data"}]}]
        }),
    )?;
    // The same QEMU command line host-ctl would use, minus the vsock device.
    let args = ctx.ok(&["args", manifest.to_str().unwrap_or_default()])?;
    let qemu_line = args
        .lines()
        .last()
        .ok_or_else(|| anyhow!("host-ctl args printed nothing"))?;
    let words = shell_words(qemu_line);
    let base_dir = ctx.host_dir("baseline")?;
    let initrd = base_dir.join("initramfs.img");
    let console = base_dir.join("console.log");
    // The same virtio transport as the machine host-ctl picked.
    let microvm = words
        .windows(2)
        .any(|w| w[0] == "-machine" && w[1].starts_with("microvm"));
    let transport = if microvm { "virtio_mmio" } else { "virtio_pci" };
    build_baseline_initramfs(ctx, &manifest, transport, &initrd)?;
    let mut qemu = Vec::new();
    let mut i = 1;
    while i < words.len() {
        let w = &words[i];
        let next = words.get(i + 1).cloned().unwrap_or_default();
        match w.as_str() {
            "-initrd" => {
                qemu.push(w.clone());
                qemu.push(initrd.display().to_string());
                i += 2;
            }
            "-object" if next.starts_with("memory-backend-memfd") => i += 2,
            "-machine" => {
                qemu.push(w.clone());
                qemu.push(next.replace(",memory-backend=mem", ""));
                i += 2;
            }
            "-chardev" if next.starts_with("socket,id=vsock") => i += 2,
            "-device"
                if next.starts_with("vhost-user-vsock") || next.starts_with("vhost-vsock") =>
            {
                i += 2
            }
            "-chardev" if next.starts_with("file,id=console") => {
                qemu.push(w.clone());
                qemu.push(format!("file,id=console,path={}", console.display()));
                i += 2;
            }
            _ => {
                qemu.push(w.clone());
                i += 1;
            }
        }
    }
    let program = words.first().cloned().unwrap_or_default();
    let mut kvmpod = Vec::new();
    let mut base = Vec::new();
    for _ in 0..runs() {
        let (wall, _, _) = ctx.run_attached(&manifest)?;
        kvmpod.push(wall);
        let _ = fs::remove_file(data.join("out.txt"));
        let start = Instant::now();
        let st = Command::new(&program)
            .args(&qemu)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()?;
        base.push(start.elapsed().as_secs_f64());
        let wrote = fs::read_to_string(data.join("out.txt")).unwrap_or_default();
        if !st.success() || wrote != "hello\n" {
            bail!(
                "the baseline VM did not do its work (status {st}); console:\n{}",
                fs::read_to_string(&console).unwrap_or_default()
            );
        }
    }
    let k = Figure::of("host-ctl run (trivial pod), wall", "s", &kvmpod);
    let b = Figure::of("baseline busybox-init VM (same work), wall", "s", &base);
    let ratio = k.median / b.median;
    report.add("baseline", k);
    report.add("baseline", b);
    report.add(
        "baseline",
        Figure::of("ratio host-ctl / baseline (medians)", "×", &[ratio]).target(1.05, false),
    );
    Ok(())
}

/// The baseline's initramfs: busybox, the same modules in the same order,
/// and an /init script doing the pod's work.
fn build_baseline_initramfs(ctx: &Ctx, manifest: &Path, transport: &str, out: &Path) -> Result<()> {
    use rootfs_builder::archive::{Archive, Entry};
    let pod = kvmpod_api::validate::load(manifest)?;
    let kernel = host_ctl::launch::host::kernel(None, None)?;
    let modules_dir = kernel
        .modules
        .ok_or_else(|| anyhow!("the kernel has no modules directory"))?;
    let kver = modules_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let index = rootfs_builder::modules::ModuleIndex::load(&modules_dir)?;
    let mut a = Archive::new();
    rootfs_builder::tree::add_dir(&mut a, &ctx.rootfs, "")?;
    a.add("dev/console", Entry::console())?;
    for d in ["proc", "mnt/data"] {
        a.add(d, Entry::dir(0o755))?;
    }
    let mut paths = Vec::new();
    for m in index.resolve(&host_ctl::launch::needed_modules(&pod, transport))? {
        let p = format!("lib/modules/{kver}/{}", m.guest_rel_path());
        a.add(&p, Entry::file(index.read_module(&m)?, 0o644))?;
        paths.push(format!("/{p}"));
    }
    let init = format!(
        "#!/bin/sh\n\
         mount -t proc proc /proc\n\
         for m in {}; do insmod $m; done\n\
         mount -t 9p -o trans=virtio,version=9p2000.L,cache=mmap,msize=512000 data /mnt/data\n\
         /bin/sh -c 'echo hello > /mnt/data/out.txt'\n\
         sync\n\
         umount /mnt/data\n\
         poweroff -f\n",
        paths.join(" ")
    );
    a.add("init", Entry::file(init.into_bytes(), 0o755))?;
    // Uncompressed, as host-ctl writes its own by default.
    rootfs_builder::write_initramfs(&a, out, rootfs_builder::Compression::None)?;
    Ok(())
}

/// 4–7. A running pod: RPC and raw vsock round trips, exec, log and raw
/// vsock throughput, and the agent's memory.
async fn service_pod(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let trigger = ctx.host_dir("trigger")?;
    let writer = "i=1; while true; do while [ ! -e /trigger/go$i ]; do sleep 0.05; done; \
                  head -c 67108864 /dev/zero; i=$((i+1)); done";
    let manifest = ctx.write_manifest(
        "service",
        &json!({
            "volumes": [{"name": "trigger", "kind": "host", "source": trigger}],
            "apps": [
                {"name": "idle", "rootfs": ctx.rootfs, "exec": ["/bin/sh", "-c", "exec sleep 1000000"]},
                {"name": "writer", "rootfs": ctx.rootfs, "exec": ["/bin/sh", "-c", writer],
                 "mountPoints": [{"volume": "trigger", "path": "/trigger", "readOnly": true}]}
            ]
        }),
    )?;
    let id = ctx
        .ok(&["run", "--detach", manifest.to_str().unwrap_or_default()])?
        .trim()
        .to_string();
    let result = service_measurements(ctx, report, &id, &trigger).await;
    let _ = ctx.ok(&["stop", "--timeout", "1", &id]);
    result
}

async fn service_measurements(
    ctx: &Ctx,
    report: &mut Report,
    id: &str,
    trigger: &Path,
) -> Result<()> {
    let rec = ctx.record(&ctx.state.join("pods").join(id))?;
    let endpoint: Endpoint = serde_json::from_value(rec["endpoint"].clone())?;
    let Endpoint::Hybrid { socket, .. } = &endpoint else {
        bail!("the bench measures hybrid vsock");
    };

    // RPC: ttrpc status round trips on one connection.
    let client = AgentClient::new(ttrpc::r#async::Client::new(
        connect(&endpoint, DEFAULT_VSOCK_PORT).await?,
    ));
    let mut rpc = Vec::new();
    for i in 0..1020 {
        let t = Instant::now();
        client
            .status(
                ttrpc::context::with_timeout(10_000_000_000),
                &StatusRequest::new(),
            )
            .await
            .map_err(|e| anyhow!("status: {e}"))?;
        if i >= 20 {
            rpc.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    // Raw vsock: one byte echoed by the agent on its forwarding port.
    let mut echo_stream = connect_hybrid(socket, FORWARD_VSOCK_PORT).await?;
    echo_stream.write_all(b"ECHO\n").await?;
    let mut ok = [0u8; 3];
    echo_stream.read_exact(&mut ok).await?;
    let mut echo = Vec::new();
    for i in 0..1020 {
        let t = Instant::now();
        echo_stream.write_all(b"x").await?;
        let mut b = [0u8; 1];
        echo_stream.read_exact(&mut b).await?;
        if i >= 20 {
            echo.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop(echo_stream);
    let r = Figure::of("ttrpc status round trip over vsock", "µs", &rpc);
    let e = Figure::of("raw vsock echo round trip (same VM)", "µs", &echo);
    let ratio = r.median / e.median;
    report.add("rpc", r);
    report.add("rpc", e);
    report.add(
        "rpc",
        Figure::of("ratio ttrpc / raw echo (medians)", "×", &[ratio]).target(1.2, false),
    );

    // Exec, end to end through the CLI.
    let mut exec = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        ctx.ok(&["exec", id, "idle", "--", "true"])?;
        exec.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    report.add(
        "exec",
        Figure::of("host-ctl exec <pod> <app> -- true", "ms", &exec),
    );

    // Memory: the agent's resident set, idle.
    let mut rss = Vec::new();
    for _ in 0..3 {
        rss.push(agent_rss_kib(ctx, id, "idle")?);
    }
    report.add(
        "memory",
        Figure::of("agent RSS, idle (2 apps)", "KiB", &rss).target(1.1 * 1024.0, false),
    );
    // Where it goes. The agent runs from the initramfs, a tmpfs: its code
    // pages count as shared memory, not as file pages.
    let status = ctx.ok(&["exec", id, "idle", "--", "cat", "/proc/1/status"])?;
    for (field, what) in [
        ("RssShmem:", "of which the binary's pages (RssShmem)"),
        ("RssAnon:", "of which heap and stacks (RssAnon)"),
        ("RssFile:", "of which other file pages (RssFile)"),
    ] {
        let kib = status_kib(&status, field)?;
        report.add("memory", Figure::of(what, "KiB", &[kib]));
    }

    // Log throughput: 64 MiB written to stdout, received through attach.
    let mut logs = Vec::new();
    let mut dropped = Vec::new();
    for run in 1..=3 {
        let (mbps, lost) = log_throughput(&endpoint, trigger, run).await?;
        logs.push(mbps);
        dropped.push(lost as f64);
    }
    let mut raw = Vec::new();
    for _ in 0..3 {
        raw.push(raw_throughput(socket).await?);
    }
    // The guest's own ceiling for moving bytes through a pipe (the first leg
    // of an app's output), to show where the log path's time goes.
    let mut pipe = Vec::new();
    for _ in 0..3 {
        pipe.push(guest_pipe_mbps(ctx, id)?);
    }
    let l = Figure::of("app stdout → host (64 MiB via attach)", "MB/s", &logs);
    let w = Figure::of("raw vsock throughput (64 MiB, same VM)", "MB/s", &raw);
    let ratio = l.median / w.median;
    report.add("logs", l);
    report.add(
        "logs",
        Figure::of(
            "bytes dropped by the agent's bounded buffer",
            "bytes",
            &dropped,
        ),
    );
    report.add("logs", w);
    report.add(
        "logs",
        Figure::of("in-guest pipe, no vsock (dd | dd, 64 MiB)", "MB/s", &pipe),
    );
    report.add(
        "logs",
        Figure::of("ratio logs / raw vsock (medians)", "×", &[ratio]).target(0.8, true),
    );
    Ok(())
}

/// 64 MiB from /dev/zero through a pipe inside the guest, timed by busybox
/// `time` (to 10 ms).
fn guest_pipe_mbps(ctx: &Ctx, id: &str) -> Result<f64> {
    let out = ctx.ok(&[
        "exec",
        id,
        "idle",
        "--",
        "/bin/sh",
        "-c",
        "time sh -c 'dd if=/dev/zero bs=16384 count=4096 | dd of=/dev/null bs=16384' 2>&1",
    ])?;
    // "real\t0m 1.23s"
    let secs: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("real"))
        .and_then(|t| {
            let (m, s) = t.trim().split_once('m')?;
            Some(m.parse::<f64>().ok()? * 60.0 + s.trim().strip_suffix('s')?.parse::<f64>().ok()?)
        })
        .ok_or_else(|| anyhow!("no time in the report: {out:?}"))?;
    Ok((64 << 20) as f64 / 1e6 / secs)
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

/// Attaches to the writer, triggers its `run`th 64 MiB, and times them.
async fn log_throughput(endpoint: &Endpoint, trigger: &Path, run: u32) -> Result<(f64, u64)> {
    const TOTAL: u64 = 64 << 20;
    let client = AgentClient::new(ttrpc::r#async::Client::new(
        connect(endpoint, DEFAULT_VSOCK_PORT).await?,
    ));
    let stream = client
        .attach(ttrpc::context::with_timeout(0))
        .await
        .map_err(|e| anyhow!("attach: {e}"))?;
    let (tx, mut rx) = stream.split();
    let mut first = AttachInput::new();
    first.kind = Some(attach_input::Kind::App("writer".into()));
    tx.send(&first).await.map_err(|e| anyhow!("attach: {e}"))?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    fs::write(trigger.join(format!("go{run}")), b"")?;
    let mut got = 0u64;
    let mut lost = 0u64;
    let mut start = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while got + lost < TOTAL {
        let chunk = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .map_err(|_| anyhow!("the writer's output did not all arrive"))?
            .map_err(|e| anyhow!("attach: {e}"))?;
        start.get_or_insert_with(Instant::now);
        got += chunk.data.len() as u64;
        lost += chunk.dropped;
    }
    let secs = start.map_or(f64::NAN, |s| s.elapsed().as_secs_f64());
    Ok((got as f64 / 1e6 / secs, lost))
}

/// 64 MiB from the agent's SOURCE service: raw hybrid vsock throughput.
async fn raw_throughput(socket: &Path) -> Result<f64> {
    const TOTAL: u64 = 64 << 20;
    let mut s = connect_hybrid(socket, FORWARD_VSOCK_PORT).await?;
    s.write_all(format!("SOURCE {TOTAL}\n").as_bytes()).await?;
    let mut ok = [0u8; 3];
    s.read_exact(&mut ok).await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    let start = Instant::now();
    while got < TOTAL {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    Ok(got as f64 / 1e6 / start.elapsed().as_secs_f64())
}

/// 7. The agent's memory with 16 apps running.
fn many_apps_memory(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let apps: Vec<Value> = (0..16)
        .map(|i| json!({"name": format!("app-{i}"), "rootfs": ctx.rootfs, "exec": ["/bin/sh", "-c", "exec sleep 1000000"]}))
        .collect();
    let manifest = ctx.write_manifest("sixteen", &json!({"apps": apps}))?;
    let id = ctx
        .ok(&["run", "--detach", manifest.to_str().unwrap_or_default()])?
        .trim()
        .to_string();
    let mut rss = Vec::new();
    let result = (|| -> Result<()> {
        for _ in 0..3 {
            rss.push(agent_rss_kib(ctx, &id, "app-0")?);
        }
        Ok(())
    })();
    let _ = ctx.ok(&["stop", "--timeout", "1", &id]);
    result?;
    report.add(
        "memory",
        Figure::of("agent RSS, 16 apps running", "KiB", &rss),
    );
    Ok(())
}

/// Figure 8: pod setup cost as volumes and apps grow: guest time from the
/// agent's start to every app started.
fn scale(ctx: &Ctx, report: &mut Report) -> Result<()> {
    for (volumes, apps) in [(8usize, 2usize), (64, 16)] {
        let mut vols = Vec::new();
        for v in 0..volumes {
            if v % 2 == 0 {
                let d = ctx.host_dir(&format!("scale-{volumes}-{v}"))?;
                vols.push(json!({"name": format!("v{v}"), "kind": "host", "source": d}));
            } else {
                vols.push(json!({"name": format!("v{v}"), "kind": "empty"}));
            }
        }
        let mounts: Vec<Value> = (0..volumes)
            .map(|v| json!({"volume": format!("v{v}"), "path": format!("/vol/{v}")}))
            .collect();
        let app_list: Vec<Value> = (0..apps)
            .map(|a| json!({"name": format!("a{a}"), "rootfs": ctx.rootfs, "exec": ["/bin/true"], "mountPoints": mounts}))
            .collect();
        let manifest = ctx.write_manifest(
            &format!("scale-{volumes}x{apps}"),
            &json!({"volumes": vols, "apps": app_list}),
        )?;
        let mut setup = Vec::new();
        let mut boot = Vec::new();
        for _ in 0..3.min(runs()) {
            let (_, rec, _) = ctx.run_attached(&manifest)?;
            let start = stamp(&rec, "init").unwrap_or(f64::NAN);
            let last = stamps_with_prefix(&rec, "app-started:")
                .into_iter()
                .fold(f64::NAN, f64::max);
            setup.push((last - start) * 1000.0);
            boot.push(start);
        }
        let name = format!("{volumes} volumes × {apps} apps: agent start → all apps started");
        let f = Figure::of(&name, "ms", &setup);
        let f = if volumes == 64 {
            f.target(100.0, false)
        } else {
            f
        };
        report.add("scale", f);
        report.add(
            "scale",
            Figure::of(
                &format!("{volumes} volumes × {apps} apps: kernel start → /init"),
                "s",
                &boot,
            ),
        );
    }
    report
        .notes
        .push("64 volumes: 32 host volumes on 9p devices behind PCIe-to-PCI bridges, 32 empty volumes on tmpfs".into());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_undo_host_ctl_quoting() {
        assert_eq!(
            shell_words("qemu -append 'console=ttyS0 panic=-1' -name x,y 'it'\\''s'"),
            [
                "qemu",
                "-append",
                "console=ttyS0 panic=-1",
                "-name",
                "x,y",
                "it's"
            ]
        );
    }
}
