//! The limit: for the trivial pod and the 64 volumes × 16 apps pod, the
//! agent's start-up beside a static C `/init` (`limit/init.c`) making the
//! same system calls for the same pod, on the same kernel, QEMU command
//! line and accelerator: the modules loaded, the root moved off the
//! initramfs, the base and cgroup mounts, the pod's share, the vsock
//! listeners, every app root (overlay, /proc, /sys, /dev and its nodes,
//! the /etc binds) and volume (9p, tmpfs, each bind and read-only
//! remount), then per app its user and groups read from its root and one
//! fork + exec into a pivoted mount namespace. The agent does more than
//! that (its cgroup, capabilities, the ttrpc server, the supervision of
//! each app): the ratios say what that costs.
//!
//! Per app of the 64 × 16 pod, both timelines split the time into the
//! root's assembly and the process's start (`app-assembled`,
//! `app-started`; the agent's `app-resolved` also parts its lookups), so
//! the bench shows where a miss is. The plan the C init runs is written
//! here from the manifest, mirroring the agent's order;
//! `plan_mirrors_the_agent` pins its shape.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use kvmpod_api::layout;
use kvmpod_api::manifest::{is_mount_read_only, PodManifest, VolumeKind};
use kvmpod_api::tag::nine_p_tag;
use kvmpod_api::timeline::{AppMoment, Mark};

use crate::baseline::shell_words;
use crate::ctx::{path_str, runs, stamp, stamps_with_prefix, Ctx};
use crate::report::Report;
use crate::scale;
use crate::stats::Figure;

const SECTION: &str = "limit";
/// The issue's targets: the agent within 1.2× of the bare system calls.
const RATIO: f64 = 1.2;

/// The agent's timeline marks up to ready, and the limit's for the same
/// moment.
const STEPS: [(&str, &str); 5] = [
    ("modules-loaded", "modules-loaded"),
    ("root-switched", "root-switched"),
    ("base-mounted", "base-mounted"),
    ("config-read", "config-read"),
    ("agent-ready", "ready"),
];

const NOSUID: u64 = 2;
const NODEV: u64 = 4;
const NOEXEC: u64 = 8;
const RDONLY: u64 = 1;

pub fn run(ctx: &Ctx, report: &mut Report) -> Result<()> {
    let init = compile_init(ctx)?;
    trivial(ctx, report, &init)?;
    scale_64x16(ctx, report, &init)
}

/// The trivial pod: the agent's start to ready beside the limit's, step
/// by step.
fn trivial(ctx: &Ctx, report: &mut Report, init: &Path) -> Result<()> {
    let data = ctx.host_dir("limit-data")?;
    let trivial = ctx.write_manifest(
        "limit-trivial",
        &serde_json::json!({
            "volumes": [{"name": "data", "kind": "host", "source": data}],
            "apps": [{"name": "writer", "rootfs": ctx.rootfs, "exec": ["/bin/sh", "-c", "echo hello > /data/out.txt"],
                      "mountPoints": [{"volume": "data", "path": "/data"}]}],
            "network": {"mode": "none"}
        }),
    )?;
    let (mut agent_ready, mut c_ready) = (Vec::new(), Vec::new());
    // Each step's time, agent and limit, to show where the time goes.
    let mut steps = vec![(Vec::new(), Vec::new()); STEPS.len()];
    let lim = LimitVm::new(ctx, &trivial, init, "limit-trivial")?;
    for _ in 0..runs() {
        let (_, rec, _) = ctx.run_attached(&trivial)?;
        agent_ready.push(span(&rec, "agent-ready")? * 1000.0);
        let marks = lim.boot()?;
        c_ready.push(marks.span("ready")? * 1000.0);
        let mut prev = (0.0, 0.0);
        for (i, (agent_mark, limit_mark)) in STEPS.iter().enumerate() {
            let now = (span(&rec, agent_mark)?, marks.span(limit_mark)?);
            steps[i].0.push((now.0 - prev.0) * 1000.0);
            steps[i].1.push((now.1 - prev.1) * 1000.0);
            prev = now;
        }
    }
    ratio_figures(
        report,
        "trivial pod: /init → ready (vsock served)",
        &agent_ready,
        &c_ready,
    );
    for ((agent_mark, _), (agent, limit)) in STEPS.iter().zip(&steps) {
        let what = format!("trivial pod: the step to {agent_mark}");
        report.add(SECTION, Figure::of(&format!("{what}, agent"), "ms", agent));
        report.add(SECTION, Figure::of(&format!("{what}, limit"), "ms", limit));
    }
    Ok(())
}

/// The 64 volumes × 16 apps pod: the agent's start to every app started
/// beside the limit's, and per app where the time went.
fn scale_64x16(ctx: &Ctx, report: &mut Report, init: &Path) -> Result<()> {
    let mut scale_m = scale::manifest(ctx, 64, 16)?;
    scale_m["network"] = serde_json::json!({"mode": "none"});
    let scale_m = ctx.write_manifest("limit-64x16", &scale_m)?;

    let (mut agent_all, mut c_all) = (Vec::new(), Vec::new());
    let apps: Vec<String> = kvmpod_api::validate::load(&scale_m)?
        .apps
        .into_iter()
        .map(|a| a.name)
        .collect();
    // Per app, the mean over the pod's apps: (agent, limit).
    let (mut assembly, mut start) = (Default::default(), Default::default());
    let mut lookups = Vec::new();
    let lim = LimitVm::new(ctx, &scale_m, init, "limit-64x16")?;
    for _ in 0..3.min(runs()) {
        let (_, rec, _) = ctx.run_attached(&scale_m)?;
        let last = stamps_with_prefix(&rec, "app-started:")
            .into_iter()
            .fold(f64::NAN, f64::max);
        agent_all.push((last - stamp(&rec, "init").unwrap_or(f64::NAN)) * 1000.0);
        let marks = lim.boot()?;
        c_all.push(marks.span("all-started")? * 1000.0);
        let agent = PerApp::of(&apps, |m| stamp(&rec, m))?;
        let limit = PerApp::of(&apps, |m| marks.seconds(m))?;
        push(&mut assembly, agent.assembly, limit.assembly);
        push(&mut start, agent.start, limit.start);
        lookups.push(agent.lookups);
    }
    ratio_figures(
        report,
        "64 volumes × 16 apps: /init → all apps started",
        &agent_all,
        &c_all,
    );
    let per_app = "64 volumes × 16 apps, per app";
    for (what, (agent, limit)) in [
        ("its root assembled (every mount)", &assembly),
        ("its process started (fork to exec)", &start),
    ] {
        let what = format!("{per_app}: {what}");
        report.add(SECTION, Figure::of(&format!("{what}, agent"), "ms", agent));
        report.add(SECTION, Figure::of(&format!("{what}, limit"), "ms", limit));
    }
    report.add(
        SECTION,
        Figure::of(
            &format!("{per_app}: of the agent's start, its user and program found"),
            "ms",
            &lookups,
        ),
    );
    Ok(())
}

fn push(to: &mut (Vec<f64>, Vec<f64>), agent: f64, limit: f64) {
    to.0.push(agent);
    to.1.push(limit);
}

/// Where one pod's per-app time went, in milliseconds, as the mean over
/// its apps, from its timeline (the agent's or the limit's).
struct PerApp {
    /// From the previous app started (the first: from the volumes
    /// mounted) to the root assembled.
    assembly: f64,
    /// From the root assembled to the process started.
    start: f64,
    /// Of `start`, the user and program lookups (the agent's only).
    lookups: f64,
}

impl PerApp {
    fn of(apps: &[String], at: impl Fn(&str) -> Option<f64>) -> Result<PerApp> {
        let get = |moment: AppMoment, app: &str| {
            let mark = Mark::app(moment, app).to_string();
            at(&mark).ok_or_else(|| anyhow!("no {mark} in the timeline"))
        };
        let mut prev = at("volumes-mounted").ok_or_else(|| anyhow!("no volumes-mounted"))?;
        let (mut assembly, mut start, mut lookups) = (0.0, 0.0, 0.0);
        for app in apps {
            let assembled = get(AppMoment::Assembled, app)?;
            let started = get(AppMoment::Started, app)?;
            assembly += assembled - prev;
            start += started - assembled;
            if let Ok(resolved) = get(AppMoment::Resolved, app) {
                lookups += resolved - assembled;
            }
            prev = started;
        }
        let per_app_ms = 1000.0 / apps.len().max(1) as f64;
        Ok(PerApp {
            assembly: assembly * per_app_ms,
            start: start * per_app_ms,
            lookups: lookups * per_app_ms,
        })
    }
}

fn ratio_figures(report: &mut Report, what: &str, agent: &[f64], limit: &[f64]) {
    let a = Figure::of(&format!("{what}, agent"), "ms", agent);
    let l = Figure::of(&format!("{what}, C init (the limit)"), "ms", limit);
    let ratio = a.median / l.median;
    report.add(SECTION, a);
    report.add(SECTION, l);
    report.add(
        SECTION,
        Figure::of(&format!("{what}: agent / limit (medians)"), "×", &[ratio]).target(RATIO, false),
    );
}

/// Seconds from the agent's start to `mark` in a pod's record.
fn span(rec: &serde_json::Value, mark: &str) -> Result<f64> {
    match (stamp(rec, "init"), stamp(rec, mark)) {
        (Some(a), Some(b)) => Ok(b - a),
        _ => bail!("the pod's timeline lacks init or {mark}: {rec}"),
    }
}

/// The C init, built static with the host's compiler.
fn compile_init(ctx: &Ctx) -> Result<PathBuf> {
    let src = ctx.repo.join("tests/bench/limit/init.c");
    let out = ctx.work.join("limit-init");
    let st = Command::new("cc")
        .args(["-static", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .context("running cc (a C compiler: run `make deps`)")?;
    if !st.success() {
        bail!("compiling {} failed", src.display());
    }
    Ok(out)
}

/// The limit VM for one pod: host-ctl's command lines (vhost-device-vsock
/// and QEMU, the same devices and memory backend) with the C init's
/// initramfs, a pod share holding what the agent's holds, and the pod
/// directory's paths moved to the limit's own.
struct LimitVm {
    program: String,
    args: Vec<String>,
    /// vhost-device-vsock and the socket QEMU connects to, for hybrid vsock.
    backend: Option<(Vec<String>, PathBuf)>,
    console: PathBuf,
}

/// The C init's timestamps, from the console.
struct Marks(Vec<(String, u64)>);

impl Marks {
    fn get(&self, name: &str) -> Option<u64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, t)| *t)
    }

    /// The boot-clock seconds of `name`.
    fn seconds(&self, name: &str) -> Option<f64> {
        self.get(name).map(|ns| ns as f64 / 1e9)
    }

    /// Seconds from the C init's start to `name`.
    fn span(&self, name: &str) -> Result<f64> {
        match (self.get("init"), self.get(name)) {
            (Some(a), Some(b)) => Ok((b - a) as f64 / 1e9),
            _ => bail!("the limit init never reached {name}"),
        }
    }
}

impl LimitVm {
    fn new(ctx: &Ctx, manifest: &Path, init: &Path, name: &str) -> Result<LimitVm> {
        let pod = kvmpod_api::validate::load(manifest)?;
        let dir = ctx.host_dir(name)?;
        let share = dir.join("share");
        let _ = fs::remove_dir_all(&share);
        fs::create_dir_all(share.join(layout::ROOTS_DIR))?;
        copy_tree(&ctx.rootfs, &share.join(layout::ROOTS_DIR).join("0"))?;
        fs::write(
            share.join(layout::AGENT_CONFIG_FILE),
            serde_json::to_vec(&kvmpod_api::config::AgentConfig::default())?,
        )?;
        fs::write(share.join(layout::MANIFEST_FILE), serde_json::to_vec(&pod)?)?;
        let args = ctx.ok(&["args", path_str(manifest)?])?;
        let lines: Vec<Vec<String>> = args
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(shell_words)
            .collect();
        let words = lines
            .last()
            .cloned()
            .ok_or_else(|| anyhow!("host-ctl args printed nothing"))?;
        // `-name kvmpod-<pod id>`: the pod directory its paths are under.
        let id = words
            .windows(2)
            .find(|w| w[0] == "-name")
            .and_then(|w| w[1].strip_prefix("kvmpod-"))
            .and_then(|n| n.split(',').next())
            .ok_or_else(|| anyhow!("no -name in host-ctl's QEMU line"))?;
        let pod_dir = ctx.state.join("pods").join(id);
        let moved = |w: &String| w.replace(&*pod_dir.to_string_lossy(), &dir.to_string_lossy());
        let microvm = words
            .windows(2)
            .any(|w| w[0] == "-machine" && w[1].starts_with("microvm"));
        let transport = if microvm { "virtio_mmio" } else { "virtio_pci" };
        let initrd = dir.join("initramfs.img");
        let console = dir.join("console.log");
        build_initramfs(&pod, transport, init, &initrd)?;
        let backend = match lines.as_slice() {
            [vhost, _qemu] => Some((vhost.iter().map(moved).collect(), dir.join("vhost.sock"))),
            _ => None,
        };
        Ok(LimitVm {
            program: words.first().cloned().unwrap_or_default(),
            args: limit_args(&words, &initrd, &share)
                .iter()
                .map(moved)
                .collect(),
            backend,
            console,
        })
    }

    /// Boots it once; the C init's marks.
    fn boot(&self) -> Result<Marks> {
        let _ = fs::remove_file(&self.console);
        let backend = match &self.backend {
            Some((argv, socket)) => Some(Backend::start(argv, socket)?),
            None => None,
        };
        let marks = self.boot_vm();
        drop(backend);
        marks
    }

    fn boot_vm(&self) -> Result<Marks> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("running {}", self.program))?;
        let until = std::time::Instant::now() + Duration::from_secs(120);
        let st = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if std::time::Instant::now() > until {
                let _ = child.kill();
                bail!("the limit VM did not power off in 2 minutes");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = fs::read_to_string(&self.console).unwrap_or_default();
        if !st.success() || text.contains("limit: FATAL") || !text.contains("limit: all-started") {
            bail!("the limit VM failed (status {st}); console:\n{text}");
        }
        let marks = text
            .lines()
            .filter_map(|l| l.strip_prefix("limit: "))
            .filter_map(|l| {
                let (name, ns) = l.trim().rsplit_once(' ')?;
                Some((name.to_string(), ns.parse().ok()?))
            })
            .collect();
        Ok(Marks(marks))
    }
}

/// vhost-device-vsock for one boot of the limit VM; killed when dropped.
struct Backend(std::process::Child);

impl Backend {
    fn start(argv: &[String], socket: &Path) -> Result<Backend> {
        let dir = socket.parent().unwrap_or(Path::new("/"));
        for leftover in ["vhost.sock", "vsock.sock"] {
            let _ = fs::remove_file(dir.join(leftover));
        }
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("running {}", argv[0]))?;
        let b = Backend(child);
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if std::time::Instant::now() > until {
                bail!("vhost-device-vsock made no {}", socket.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(b)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// host-ctl's QEMU arguments (after the program) with the limit's
/// initramfs, and the pod's share (`fs0`) pointed at the limit's.
fn limit_args(words: &[String], initrd: &Path, share: &Path) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut words = words.iter().skip(1).peekable();
    while let Some(w) = words.next() {
        out.push(w.clone());
        match (w.as_str(), words.peek()) {
            ("-initrd", Some(_)) => {
                words.next();
                out.push(initrd.display().to_string());
            }
            ("-fsdev", Some(next)) if next.starts_with("local,id=fs0,") => {
                let rest = next.split_once(",security_model").map_or("", |(_, r)| r);
                out.push(format!(
                    "local,id=fs0,path={},security_model{rest}",
                    share.display()
                ));
                words.next();
            }
            _ => {}
        }
    }
    out
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .context("running cp")?;
    if !st.success() {
        bail!("copying {} to {}", from.display(), to.display());
    }
    Ok(())
}

/// The limit initramfs: the C init, the stage1 image's modules for the
/// transport and its plan.
fn build_initramfs(pod: &PodManifest, transport: &str, init: &Path, out: &Path) -> Result<()> {
    use rootfs_builder::archive::{Archive, Entry};
    let mut a = Archive::new();
    a.add("dev/console", Entry::console())?;
    let paths = crate::baseline::add_stage1_modules(&mut a, transport)?;
    a.add("init", Entry::file(fs::read(init)?, 0o755))?;
    a.add(
        "limit.plan",
        Entry::file(plan(pod, &paths).into_bytes(), 0o644),
    )?;
    rootfs_builder::write_initramfs(&a, out, rootfs_builder::Compression::None)?;
    Ok(())
}

/// One operation per line, fields separated by tabs.
#[derive(Default)]
struct Plan(String);

impl Plan {
    fn op(&mut self, fields: &[&str]) {
        let _ = writeln!(self.0, "{}", fields.join("\t"));
    }
}

/// The C init's plan for `pod`, in the agent's order (see the module
/// docs).
fn plan(pod: &PodManifest, modules: &[String]) -> String {
    let mut p = Plan::default();
    until_ready(&mut p, modules);
    mount_all(&mut p, pod);
    // Each app's root assembled, then the app started (start_apps).
    for app in &pod.apps {
        start_app(&mut p, pod, app);
    }
    p.op(&["mark", "all-started"]);
    p.op(&["wait"]);
    p.op(&["poweroff"]);
    p.0
}

/// Modules, the root switch, the base mounts, the pod's share and the
/// vsock listeners.
fn until_ready(p: &mut Plan, modules: &[String]) {
    let mut op = |fields: &[&str]| p.op(fields);
    for m in modules {
        op(&["insmod", m]);
    }
    op(&["mark", "modules-loaded"]);
    op(&["switchroot"]);
    op(&["mark", "root-switched"]);
    let base: [(&str, &str, &str, u64, &str); 7] = [
        ("proc", "/proc", "proc", NOSUID | NODEV | NOEXEC, "-"),
        ("sysfs", "/sys", "sysfs", NOSUID | NODEV | NOEXEC, "-"),
        ("devtmpfs", "/dev", "devtmpfs", NOSUID, "mode=0755"),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            NOSUID | NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        ),
        ("shm", "/dev/shm", "tmpfs", NOSUID | NODEV, "mode=1777"),
        ("run", "/run", "tmpfs", NOSUID | NODEV, "mode=0755"),
        ("tmp", "/tmp", "tmpfs", NOSUID | NODEV, "mode=1777"),
    ];
    for (src, target, fstype, flags, data) in base {
        op(&["mount", src, target, fstype, &flags.to_string(), data]);
    }
    op(&["write", "/proc/self/oom_score_adj", "-1000"]);
    let cg = (NOSUID | NODEV | NOEXEC).to_string();
    op(&[
        "mount",
        "cgroup2",
        layout::CGROUP_ROOT,
        "cgroup2",
        &cg,
        "nsdelegate,favordynmods",
    ]);
    let control = format!("{}/cgroup.subtree_control", layout::CGROUP_ROOT);
    for controller in ["+memory", "+cpu", "+pids"] {
        op(&["write", &control, controller]);
    }
    op(&["mark", "base-mounted"]);
    let loose = "trans=virtio,version=9p2000.L,cache=loose,msize=512000";
    let share = layout::POD_SHARE_DIR;
    op(&[
        "mount",
        layout::POD_SHARE_TAG,
        share,
        "9p",
        &RDONLY.to_string(),
        loose,
    ]);
    op(&[
        "read",
        &layout::in_pod_share(layout::AGENT_CONFIG_FILE).to_string_lossy(),
    ]);
    op(&[
        "read",
        &layout::in_pod_share(layout::MANIFEST_FILE).to_string_lossy(),
    ]);
    op(&["mkdir", "/etc"]);
    op(&["write", "/etc/hostname", "limit\\n"]);
    op(&[
        "write",
        "/etc/hosts",
        "127.0.0.1\\tlocalhost\\n::1\\tlocalhost\\n",
    ]);
    op(&["write", "/etc/resolv.conf", "\\n"]);
    op(&["mark", "config-read"]);
    for port in [
        layout::DEFAULT_VSOCK_PORT,
        layout::LOG_VSOCK_PORT,
        layout::IO_VSOCK_PORT,
        layout::FORWARD_VSOCK_PORT,
    ] {
        op(&["vsock", &port.to_string()]);
    }
    op(&["mark", "ready"]);
}

/// The app roots, then the volumes (the agent's mount_all).
fn mount_all(p: &mut Plan, pod: &PodManifest) {
    let mut op = |fields: &[&str]| p.op(fields);
    let upper = layout::UPPER_DIR;
    op(&[
        "mount",
        "upper",
        upper,
        "tmpfs",
        &(NOSUID | NODEV).to_string(),
        "mode=0700",
    ]);
    for app in &pod.apps {
        let u = format!("{upper}/{}/upper", app.name);
        let w = format!("{upper}/{}/work", app.name);
        op(&["mkdir", &u]);
        op(&["mkdir", &w]);
        let lower = layout::in_pod_share(layout::ROOTS_DIR).join("0");
        let data = format!("lowerdir={},upperdir={u},workdir={w}", lower.display());
        let root = layout::app_rootfs(&app.name);
        op(&[
            "mount",
            "overlay",
            &root.to_string_lossy(),
            "overlay",
            "0",
            &data,
        ]);
    }
    let mmap = "trans=virtio,version=9p2000.L,cache=mmap,msize=512000";
    for v in &pod.volumes {
        let dir = layout::volume_dir(&v.name);
        let dir = dir.to_string_lossy();
        match v.kind {
            VolumeKind::Host => {
                let flags = if pod.exported_read_only(v) { RDONLY } else { 0 };
                op(&[
                    "mount",
                    &nine_p_tag(&v.name),
                    &dir,
                    "9p",
                    &flags.to_string(),
                    mmap,
                ]);
            }
            VolumeKind::Empty => {
                op(&[
                    "mount",
                    "tmpfs",
                    &dir,
                    "tmpfs",
                    &(NOSUID | NODEV).to_string(),
                    "mode=0755",
                ]);
            }
        }
    }
    op(&["mark", "volumes-mounted"]);
}

/// One app's root assembled, and the app started.
fn start_app(p: &mut Plan, pod: &PodManifest, app: &kvmpod_api::manifest::App) {
    let root = layout::app_rootfs(&app.name).to_string_lossy().into_owned();
    let at = |path: &str| format!("{root}{path}");
    app_kernel_mounts(p, &root);
    for name in ["hosts", "hostname", "resolv.conf"] {
        let target = at(&format!("/etc/{name}"));
        p.op(&["bind", &format!("/etc/{name}"), &target, "file"]);
        p.op(&["robind", &target]);
    }
    let mut mps: Vec<_> = app.mount_points.iter().collect();
    mps.sort_by(|a, b| a.path.cmp(&b.path));
    for mp in mps {
        let Some(v) = pod.volume(&mp.volume) else {
            continue;
        };
        let target = at(&mp.path);
        let source = layout::volume_dir(&v.name);
        p.op(&["bind", &source.to_string_lossy(), &target, "dir"]);
        if is_mount_read_only(v, mp) {
            p.op(&["robind", &target]);
        }
    }
    p.op(&[
        "stamp",
        &Mark::app(AppMoment::Assembled, &app.name).to_string(),
    ]);
    // The app's user and groups, which the agent (as runc does) looks up
    // in the app's own root.
    p.op(&["read", &at("/etc/passwd")]);
    p.op(&["read", &at("/etc/group")]);
    p.op(&["exec", &root, "/bin/true"]);
    p.op(&[
        "stamp",
        &Mark::app(AppMoment::Started, &app.name).to_string(),
    ]);
}

/// An app root's /proc, read-only /sys, and /dev (a tmpfs with the usual
/// nodes and links, its own devpts, /dev/shm), as the agent's.
fn app_kernel_mounts(p: &mut Plan, root: &str) {
    let at = |path: &str| format!("{root}{path}");
    let mut mount = |src: &str, path: &str, fstype: &str, flags: u64, data: &str| {
        p.op(&["mount", src, &at(path), fstype, &flags.to_string(), data]);
    };
    mount("proc", "/proc", "proc", NOSUID | NODEV | NOEXEC, "-");
    mount(
        "sysfs",
        "/sys",
        "sysfs",
        NOSUID | NODEV | NOEXEC | RDONLY,
        "-",
    );
    mount(
        "tmpfs",
        "/dev",
        "tmpfs",
        NOSUID | NOEXEC,
        "mode=0755,size=64k",
    );
    for (name, major, minor, mode) in [
        ("null", 1, 3, "666"),
        ("zero", 1, 5, "666"),
        ("full", 1, 7, "666"),
        ("random", 1, 8, "666"),
        ("urandom", 1, 9, "666"),
        ("tty", 5, 0, "666"),
        ("console", 5, 1, "620"),
    ] {
        let (major, minor) = (major.to_string(), minor.to_string());
        p.op(&["mknod", &at(&format!("/dev/{name}")), &major, &minor, mode]);
    }
    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        p.op(&["symlink", target, &at(&format!("/dev/{name}"))]);
    }
    let mut mount = |src: &str, path: &str, fstype: &str, flags: u64, data: &str| {
        p.op(&["mount", src, &at(path), fstype, &flags.to_string(), data]);
    };
    let pts = "newinstance,ptmxmode=0666,mode=0620";
    mount("devpts", "/dev/pts", "devpts", NOSUID | NOEXEC, pts);
    mount("shm", "/dev/shm", "tmpfs", NOSUID | NODEV, "mode=1777");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_mirrors_the_agent() {
        let pod: PodManifest = serde_json::from_value(serde_json::json!({
            "volumes": [
                {"name": "h", "kind": "host", "source": "/tmp"},
                {"name": "e", "kind": "empty"}
            ],
            "apps": [
                {"name": "a", "rootfs": "/r", "exec": ["/bin/true"],
                 "mountPoints": [{"volume": "h", "path": "/h", "readOnly": true}, {"volume": "e", "path": "/e"}]},
                {"name": "b", "rootfs": "/r", "exec": ["/bin/true"]}
            ]
        }))
        .unwrap();
        let p = plan(&pod, &["/lib/modules/x/9p.ko".into()]);
        let count = |op: &str| {
            p.lines()
                .filter(|l| l.split('\t').next() == Some(op))
                .count()
        };
        assert_eq!(count("insmod"), 1);
        // Per app: three /etc binds, and a's two volumes.
        assert_eq!(count("bind"), 3 * 2 + 2);
        // The /etc binds and the read-only mount point.
        assert_eq!(count("robind"), 3 * 2 + 1);
        assert_eq!(count("exec"), 2);
        assert_eq!(count("vsock"), 4);
        // Per app: the config and manifest, then passwd and group.
        assert_eq!(count("read"), 2 + 2 * 2);
        // Each app's moments, kept until power-off.
        let stamps: Vec<&str> = p
            .lines()
            .filter_map(|l| l.strip_prefix("stamp\t"))
            .collect();
        assert_eq!(
            stamps,
            [
                "app-assembled:a",
                "app-started:a",
                "app-assembled:b",
                "app-started:b"
            ]
        );
        // Marks in order, and the plan ends the VM.
        let marks: Vec<&str> = p.lines().filter_map(|l| l.strip_prefix("mark\t")).collect();
        assert_eq!(
            marks,
            [
                "modules-loaded",
                "root-switched",
                "base-mounted",
                "config-read",
                "ready",
                "volumes-mounted",
                "all-started"
            ]
        );
        assert_eq!(p.lines().last(), Some("poweroff"));
    }
}
