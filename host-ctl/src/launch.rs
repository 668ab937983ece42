//! Preparing a pod and starting its VM.
//!
//! Preparation (validation, the pod directory and record, the initramfs,
//! the hypervisor's command line) happens in the `run` process, so every
//! error is reported where the user is. What starting the VM needs is saved
//! as `launch.json`, which a detached monitor reads.

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
use crate::vmspec::{self, VmSpec, Vsock};
use crate::{bootkernel, qemu, tools};

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Settings {
    pub manifest: PathBuf,
    pub state_dir: PathBuf,
    pub kernel: Option<PathBuf>,
    pub modules_dir: Option<PathBuf>,
    pub agent: Option<PathBuf>,
    pub accel: AccelRequest,
    pub memory_mib: u32,
    pub cpus: u32,
    pub boot_timeout: Duration,
    pub grace: Duration,
    pub linger: Duration,
    pub debug: bool,
    pub detach: bool,
}

/// How to start a prepared pod's VM (`<pod dir>/launch.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Launch {
    pub qemu: PathBuf,
    pub qemu_args: Vec<String>,
    pub vsock_backend: PathBuf,
    pub vsock_backend_args: Vec<String>,
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
pub fn needed_modules(pod: &PodManifest) -> Vec<String> {
    let mut m = vec![
        "virtio_pci".to_string(),
        "vmw_vsock_virtio_transport".to_string(),
    ];
    if pod.volumes.iter().any(|v| v.kind == VolumeKind::Host) {
        m.push("9pnet_virtio".into());
        m.push("9p".into());
    }
    m
}

/// A pod ready to boot.
pub struct Prepared {
    pub dir: PodDir,
    pub pod: PodManifest,
    pub launch: Launch,
}

/// Validates, creates the pod's directory and record, builds its
/// initramfs and works out the hypervisor's command line. Nothing is
/// created when the manifest or the host is not fit to run it.
pub fn prepare(s: &Settings, mark: &mut dyn FnMut(&'static str)) -> Result<Prepared> {
    let pod = kvmpod_api::validate::load(&s.manifest)?;
    let qemu_bin = tools::qemu()?;
    let vhost_bin = tools::vhost_device_vsock()?;
    let agent = tools::agent(s.agent.as_deref())?;
    let kernel = tools::kernel(s.kernel.as_deref(), s.modules_dir.as_deref())?;
    let choice = accel::choose(s.accel).map_err(|e| anyhow!(e))?;
    eprintln!(
        "host-ctl: accelerator {}: {}",
        choice.accel.name(),
        choice.reason
    );
    mark("validated");

    let dir = PodDir::create(&s.state_dir)?;
    let mut rec = PodRecord::new(&dir, &s.manifest, s.detach);
    rec.accel = Some(choice.accel.name().to_string());
    rec.apps = pod
        .apps
        .iter()
        .map(|a| record::AppSummary {
            name: a.name.clone(),
            state: "pending".into(),
            exit_code: None,
            signal: 0,
            error: String::new(),
        })
        .collect();
    record::create(&dir.path, &rec)?;
    let result = (|| -> Result<Launch> {
        fs::write(dir.manifest(), serde_json::to_vec_pretty(&pod)?)
            .with_context(|| format!("writing {}", dir.manifest().display()))?;
        let config = AgentConfig {
            linger_secs: s.linger.as_secs(),
            grace_ms: u32::try_from(s.grace.as_millis()).unwrap_or(u32::MAX),
            debug: s.debug,
            ..AgentConfig::default()
        };
        let spec = InitramfsSpec {
            agent,
            manifest: pod.clone(),
            config,
            modules: kernel.modules.as_ref().map(|d| KernelModules {
                dir: d.clone(),
                wanted: needed_modules(&pod),
            }),
        };
        let archive = build_archive(&spec).context("building the initramfs")?;
        write_initramfs(&archive, &dir.initramfs(), Compression::Gzip)
            .context("writing the initramfs")?;
        mark("initramfs-built");
        let boot = bootkernel::boot_kernel(&kernel.image, &s.state_dir.join("cache"));
        mark("kernel-ready");
        let vm = VmSpec {
            name: dir.id.clone(),
            kernel: boot.path,
            initrd: dir.initramfs(),
            cmdline: vmspec::kernel_cmdline(s.debug),
            memory_mib: s.memory_mib,
            cpus: s.cpus,
            accel: choice.accel,
            console_log: dir.console_log(),
            shares: vmspec::shares(&pod),
            vsock: Vsock::VhostUser {
                socket: dir.vhost_socket(),
            },
        };
        let launch = Launch {
            qemu: qemu_bin,
            qemu_args: qemu::argv(&vm),
            vsock_backend: vhost_bin,
            vsock_backend_args: vec![
                "--vm".to_string(),
                format!(
                    "guest-cid=3,socket={},uds-path={}",
                    dir.vhost_socket().display(),
                    dir.vsock_socket().display()
                ),
            ],
            boot_timeout_secs: s.boot_timeout.as_secs(),
            grace_ms: u32::try_from(s.grace.as_millis()).unwrap_or(u32::MAX),
            accel: choice.accel.name().to_string(),
        };
        fs::write(
            dir.path.join("launch.json"),
            serde_json::to_vec_pretty(&launch)?,
        )?;
        Ok(launch)
    })();
    match result {
        Ok(launch) => Ok(Prepared { dir, pod, launch }),
        Err(e) => {
            let msg = format!("{e:#}");
            let _ = record::update(&dir.path, |r| {
                r.state = record::State::Exited;
                r.finished = Some(record::now());
                r.exit_reason = Some(format!("preparing failed: {msg}"));
            });
            Err(e)
        }
    }
}

/// The VM's processes.
pub struct Vm {
    pub vm: Supervised,
    pub vhost: Supervised,
}

/// Starts the vsock backend, then QEMU.
pub async fn start(dir: &PodDir, launch: &Launch, die_with_parent: bool) -> Result<Vm> {
    let mut vhost = Supervised::spawn(
        "vhost-device-vsock",
        &launch.vsock_backend,
        &launch.vsock_backend_args,
        &dir.vhost_log(),
        die_with_parent,
    )?;
    wait_for_socket(&mut vhost, &dir.vhost_socket(), Duration::from_secs(5)).await?;
    let vm = Supervised::spawn(
        "QEMU",
        &launch.qemu,
        &launch.qemu_args,
        &dir.qemu_log(),
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
