//! Preparing a pod and starting its VM.
//!
//! [`plan`] works out everything a pod needs without creating anything
//! (`host-ctl args` prints its result); [`prepare`] then creates the pod's
//! directory and record, leases its CID, builds its initramfs and mounts
//! any share aliases. It runs in the `run` process, so every error is
//! reported where the user is. What starting the VM needs is saved as
//! `launch.json`, which a detached monitor reads.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use kvmpod_api::config::AgentConfig;
use kvmpod_api::manifest::{PodManifest, VolumeKind};
use rootfs_builder::{build_archive, write_initramfs, Compression, InitramfsSpec, KernelModules};
use serde::{Deserialize, Serialize};

use crate::accel::{self, AccelRequest};
use crate::child::Supervised;
use crate::poddir::PodDir;
use crate::record::{self, PodRecord};
use crate::shares::{self, Alias};
use crate::vmspec::{self, Hypervisor, Machine, Share, VmSpec, Vsock};
use crate::vsock::{self, Endpoint};
use crate::{bootkernel, cids, tools, tsc};

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Settings {
    pub manifest: PathBuf,
    pub state_dir: PathBuf,
    pub kernel: Option<PathBuf>,
    pub modules_dir: Option<PathBuf>,
    pub agent: Option<PathBuf>,
    pub accel: AccelRequest,
    pub hypervisor: Hypervisor,
    pub vsock: vsock::Mode,
    pub memory_mib: u32,
    pub cpus: u32,
    pub boot_timeout: Duration,
    pub grace: Duration,
    pub linger: Duration,
    pub debug: bool,
    /// Gzip the initramfs (see `host-ctl run --help`).
    pub gzip_initramfs: bool,
    pub detach: bool,
}

/// A program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cmd {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// How to start a prepared pod's VM (`<pod dir>/launch.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Launch {
    pub hypervisor: String,
    pub vm: Cmd,
    /// The vhost-user vsock backend, for hybrid vsock.
    pub vsock_backend: Option<Cmd>,
    pub endpoint: Endpoint,
    pub boot_timeout_secs: u64,
    pub grace_ms: u32,
    pub accel: String,
}

impl Launch {
    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join("launch.json");
        serde_json::from_slice(&fs::read(&p).with_context(|| format!("reading {}", p.display()))?)
            .with_context(|| format!("{} is not a launch description", p.display()))
    }
}

/// The kernel modules a pod needs, before their dependencies.
pub fn needed_modules(pod: &PodManifest, transport: &str) -> Vec<String> {
    let mut m = vec![
        transport.to_string(),
        "vmw_vsock_virtio_transport".to_string(),
    ];
    if pod.volumes.iter().any(|v| v.kind == VolumeKind::Host) {
        m.push("9pnet_virtio".into());
        m.push("9p".into());
    }
    m
}

/// Everything a pod needs, worked out before anything is created.
pub struct Plan {
    pub dir: PodDir,
    pub pod: PodManifest,
    pub agent: PathBuf,
    pub kernel: tools::Kernel,
    pub launch: Launch,
    pub aliases: Vec<Alias>,
    pub cid: u32,
    /// The guest driver of the VM's virtio transport (a kernel module).
    pub transport: &'static str,
    /// What was chosen and why, for the user.
    pub notes: Vec<String>,
}

/// What a pod's plan needs from the manifest and the host, found once: the
/// CID is leased only after every check passed, and adds nothing to find.
#[derive(Clone)]
struct Draft {
    dir: PodDir,
    pod: PodManifest,
    agent: PathBuf,
    kernel: tools::Kernel,
    accel: accel::Choice,
    vm_bin: PathBuf,
    image: PathBuf,
    /// vhost-device-vsock, for hybrid vsock; `None`: the host's AF_VSOCK.
    vhost_program: Option<PathBuf>,
    shares: Vec<Share>,
    aliases: Vec<Alias>,
    machine: Machine,
    tsc_khz: Option<u64>,
    notes: Vec<String>,
}

/// Validates the manifest and the host. `dir` is where the pod would
/// live; `boot_kernel` the image to boot (QEMU may boot an extracted,
/// cached ELF). Unless `strict`, what this host lacks to run the pod is
/// noted, not refused.
fn draft(
    s: &Settings,
    dir: PodDir,
    boot_kernel: &dyn Fn(&Path) -> PathBuf,
    strict: bool,
) -> Result<Draft> {
    let pod = kvmpod_api::validate::load(&s.manifest)?;
    let agent = tools::agent(s.agent.as_deref())?;
    let kernel = tools::kernel(s.kernel.as_deref(), s.modules_dir.as_deref())?;
    let choice = accel::choose(s.accel).map_err(|e| anyhow!(e))?;
    let mut notes = Vec::new();
    let vhost_wanted = if s.hypervisor == Hypervisor::Lkvm && !strict {
        vsock::Mode::Vhost
    } else {
        s.vsock
    };
    let (kind, why) = match vsock::choose(vhost_wanted, Path::new("/dev/vhost-vsock")) {
        Ok(c) => c,
        Err(e) if !strict => {
            notes.push(format!("cannot run here: {e}"));
            (vsock::Kind::Vhost, "lkvm needs it".to_string())
        }
        Err(e) => bail!(e),
    };
    notes.extend([
        format!("accelerator {}: {}", choice.accel.name(), choice.reason),
        format!(
            "vsock {}: {why}",
            if kind == vsock::Kind::Vhost {
                "vhost (AF_VSOCK)"
            } else {
                "hybrid (vhost-device-vsock)"
            }
        ),
    ]);
    let (vm_bin, image) = match s.hypervisor {
        Hypervisor::Qemu => (
            tools::qemu().or_else(|e| lacking(&mut notes, strict, e, crate::qemu::QEMU))?,
            boot_kernel(&kernel.image),
        ),
        // kvmtool boots bzImages, not ELF kernels.
        Hypervisor::Lkvm => (
            tools::lkvm().or_else(|e| lacking(&mut notes, strict, e, crate::lkvm::LKVM))?,
            kernel.image.clone(),
        ),
    };
    if s.hypervisor == Hypervisor::Lkvm && kind == vsock::Kind::Hybrid {
        bail!("lkvm needs the host's vhost-vsock (AF_VSOCK), which is not usable here: {why}");
    }
    let (shares, aliases) = shares::for_hypervisor(s.hypervisor, &vmspec::shares(&pod), &dir.path);
    let vhost_program = match kind {
        vsock::Kind::Vhost => None,
        vsock::Kind::Hybrid => Some(
            tools::vhost_device_vsock()
                .or_else(|e| lacking(&mut notes, strict, e, "vhost-device-vsock"))?,
        ),
    };
    // kvmtool's virtio devices are on PCI.
    let mut machine = match s.hypervisor {
        Hypervisor::Qemu => Machine::for_shares(shares.len()),
        Hypervisor::Lkvm => Machine::Q35,
    };
    // A TCG guest on microvm must be told its TSC rate (see `tsc`); where
    // the host's cannot be measured, a machine with timers it can
    // calibrate against does instead.
    let mut tsc_khz = None;
    if machine == Machine::Microvm && choice.accel == accel::Accel::Tcg {
        tsc_khz = tsc::host_tsc_khz();
        if tsc_khz.is_none() {
            machine = Machine::Q35;
            notes.push(
                "q35 rather than microvm: this host's TSC rate could not be measured as constant"
                    .into(),
            );
        }
    }
    if s.hypervisor == Hypervisor::Lkvm && choice.accel != accel::Accel::Kvm {
        notes.push("lkvm always uses KVM".into());
    }
    Ok(Draft {
        dir,
        pod,
        agent,
        kernel,
        accel: choice,
        vm_bin,
        image,
        vhost_program,
        shares,
        aliases,
        machine,
        tsc_khz,
        notes,
    })
}

/// The plan with guest CID `cid`: the VM's command lines.
fn finish(s: &Settings, d: Draft, cid: u32) -> Result<Plan> {
    let dir = d.dir;
    let (vsock, endpoint, backend) = match d.vhost_program {
        Some(program) => (
            Vsock::VhostUser {
                socket: dir.vhost_socket(),
            },
            Endpoint::Hybrid {
                socket: dir.vsock_socket(),
                cid,
            },
            Some(Cmd {
                program,
                args: vec![
                    "--vm".to_string(),
                    format!(
                        "guest-cid={cid},socket={},uds-path={}",
                        dir.vhost_socket().display(),
                        dir.vsock_socket().display()
                    ),
                ],
            }),
        ),
        None => (Vsock::Kernel { cid }, Endpoint::Vhost { cid }, None),
    };
    let spec = VmSpec {
        name: dir.id.clone(),
        machine: d.machine,
        kernel: d.image,
        initrd: dir.initramfs(),
        cmdline: vmspec::kernel_cmdline(s.debug, d.tsc_khz),
        memory_mib: s.memory_mib,
        cpus: s.cpus,
        accel: d.accel.accel,
        console_log: dir.console_log(),
        shares: d.shares,
        vsock,
    };
    let vm_args = s.hypervisor.argv(&spec).map_err(|e| anyhow!(e))?;
    let launch = Launch {
        hypervisor: s.hypervisor.name().into(),
        vm: Cmd {
            program: d.vm_bin,
            args: vm_args,
        },
        vsock_backend: backend,
        endpoint,
        boot_timeout_secs: s.boot_timeout.as_secs(),
        grace_ms: u32::try_from(s.grace.as_millis()).unwrap_or(u32::MAX),
        accel: d.accel.accel.name().to_string(),
    };
    Ok(Plan {
        dir,
        pod: d.pod,
        agent: d.agent,
        kernel: d.kernel,
        launch,
        aliases: d.aliases,
        cid,
        transport: d.machine.transport_module(),
        notes: d.notes,
    })
}

/// A program this host lacks: an error when `strict`, else a note and its
/// bare name.
fn lacking(notes: &mut Vec<String>, strict: bool, e: anyhow::Error, bare: &str) -> Result<PathBuf> {
    if strict {
        return Err(e);
    }
    notes.push(format!("cannot run here: {e:#}"));
    Ok(PathBuf::from(bare))
}

/// The plan for a pod that is not created: for `host-ctl args`.
pub fn plan(s: &Settings) -> Result<Plan> {
    let dir = PodDir::planned(&s.state_dir);
    let cid = cids::peek(&s.state_dir);
    let cache = s.state_dir.join("cache");
    let d = draft(s, dir, &|k| bootkernel::boot_kernel(k, &cache).path, false)?;
    finish(s, d, cid)
}

/// Validates, creates the pod's directory and record, leases its CID,
/// builds its initramfs and mounts its share aliases. Nothing is left
/// behind when the manifest or the host is not fit to run it.
pub fn prepare(s: &Settings, mark: &mut dyn FnMut(&'static str)) -> Result<Plan> {
    // Every check first, with nothing created: the CID is not leased yet.
    let cache = s.state_dir.join("cache");
    let boot = |k: &Path| bootkernel::boot_kernel(k, &cache).path;
    let mut d = draft(s, PodDir::planned(&s.state_dir), &boot, true)?;
    // The command lines too, with a stand-in CID.
    finish(s, d.clone(), cids::FIRST)?;
    let dir = d.dir.clone();
    dir.make(&s.state_dir)?;
    record::create(&dir.path, &PodRecord::new(&dir, &s.manifest, s.detach))?;
    let result = (|| -> Result<Plan> {
        let cid = cids::allocate(&s.state_dir, &dir.id)?;
        d.dir = PodDir::open(&dir.path)?;
        let plan = finish(s, d, cid)?;
        for n in &plan.notes {
            eprintln!("host-ctl: {n}");
        }
        mark("validated");
        record::update(&dir.path, |r| {
            r.cid = Some(cid);
            r.accel = Some(plan.launch.accel.clone());
            r.hypervisor = Some(plan.launch.hypervisor.clone());
            r.endpoint = Some(plan.launch.endpoint.clone());
            r.apps = plan
                .pod
                .apps
                .iter()
                .map(|a| record::AppSummary {
                    name: a.name.clone(),
                    state: "pending".into(),
                    exit_code: None,
                    signal: 0,
                    error: String::new(),
                    restarts: 0,
                })
                .collect();
        })?;
        fs::write(dir.manifest(), serde_json::to_vec_pretty(&plan.pod)?)
            .with_context(|| format!("writing {}", dir.manifest().display()))?;
        let config = AgentConfig {
            hostname: plan
                .pod
                .hostname
                .clone()
                .unwrap_or_else(|| dir.id.chars().take(12).collect()),
            linger_secs: s.linger.as_secs(),
            grace_ms: plan.launch.grace_ms,
            debug: s.debug,
            ..AgentConfig::default()
        };
        let spec = InitramfsSpec {
            agent: plan.agent.clone(),
            manifest: plan.pod.clone(),
            config,
            modules: plan.kernel.modules.as_ref().map(|d| KernelModules {
                dir: d.clone(),
                wanted: needed_modules(&plan.pod, plan.transport),
            }),
        };
        let archive = build_archive(&spec).context("building the initramfs")?;
        // Uncompressed by default: measured on TCG, gzip costs ~0.35 s to
        // build and ~0.17 s of guest boot to unpack (`make bench`).
        let compression = if s.gzip_initramfs {
            Compression::Gzip
        } else {
            Compression::None
        };
        let bytes = write_initramfs(&archive, &dir.initramfs(), compression)
            .context("writing the initramfs")?;
        record::update(&dir.path, |r| r.initramfs_bytes = Some(bytes))?;
        mark("initramfs-built");
        shares::check(&plan.aliases)?;
        shares::mount_all(&plan.aliases, &dir.path)?;
        fs::write(
            dir.path.join("launch.json"),
            serde_json::to_vec_pretty(&plan.launch)?,
        )?;
        mark("kernel-ready");
        Ok(plan)
    })();
    match result {
        Ok(plan) => Ok(plan),
        Err(e) => {
            let msg = format!("{e:#}");
            let _ = record::update(&dir.path, |r| {
                r.state = record::State::Exited;
                r.finished = Some(record::now());
                r.exit_reason = Some(format!("preparing failed: {msg}"));
            });
            release(&s.state_dir, &dir);
            Err(e)
        }
    }
}

/// Releases what a pod holds on the host once it is over: its CID lease,
/// share aliases, sockets and initramfs.
pub fn release(state_dir: &Path, dir: &PodDir) {
    if let Ok(r) = record::read(&dir.path) {
        if let Some(cid) = r.cid {
            cids::release(state_dir, cid, &dir.id);
        }
    }
    shares::unmount_all(&dir.path);
    dir.tidy();
}

/// The VM's processes.
pub struct Vm {
    pub vm: Supervised,
    pub vhost: Option<Supervised>,
}

/// Starts the vsock backend (for hybrid vsock), then the hypervisor.
pub async fn start(dir: &PodDir, launch: &Launch, die_with_parent: bool) -> Result<Vm> {
    let vhost = match &launch.vsock_backend {
        Some(b) => {
            let mut vhost = Supervised::spawn(
                "vhost-device-vsock",
                &b.program,
                &b.args,
                &dir.vhost_log(),
                die_with_parent,
            )?;
            wait_for_socket(&mut vhost, &dir.vhost_socket(), Duration::from_secs(5)).await?;
            Some(vhost)
        }
        None => None,
    };
    let (what, log) = match launch.hypervisor.as_str() {
        // lkvm writes the serial console to its stdout.
        "lkvm" => ("lkvm", dir.console_log()),
        _ => ("QEMU", dir.qemu_log()),
    };
    let vm = Supervised::spawn(
        what,
        &launch.vm.program,
        &launch.vm.args,
        &log,
        die_with_parent,
    )?;
    Ok(Vm { vm, vhost })
}

pub fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn wait_for_socket(backend: &mut Supervised, path: &Path, limit: Duration) -> Result<()> {
    let until = Instant::now() + limit;
    while !path.exists() {
        if let Some(status) = backend.exited() {
            bail!(
                "{} exited ({status}) before creating {}:\n{}",
                backend.what,
                path.display(),
                indent(&backend.log_tail(10))
            );
        }
        if Instant::now() >= until {
            bail!(
                "{} did not create {} within {limit:?}",
                backend.what,
                path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
