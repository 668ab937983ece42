//! Working out a pod's plan: what the manifest and the host decide (the
//! draft), then the command lines once the pod has its guest CID.

use std::path::{Path, PathBuf};

use kvmpod_api::manifest::PodManifest;
use kvmpod_api::network::NetworkMode;

use super::image_run::PodSource;
use super::roots::{self, RootsPlan};
use super::{host, network, LaunchError, PodPlan, RunOptions, VmOrigin};
use crate::agent::Endpoint;
use crate::pod::{cache_dir, cids, names, PodDir, PodError, VmLaunch};
use crate::stage1::{Stage1, Stage1Store};
use crate::ui::notes::Notes;
use crate::vmm::accel::{self, Choice};
use crate::vmm::vsock::{self, VsockKind, VsockMode, VHOST_VSOCK_DEV};
use crate::vmm::{
    host_shares, hypervisor, kernel_cmdline, Alias, Cache, Hypervisor, MachineChoice, Program,
    Share, UserNet, VmConfig, VmmError, VsockDevice,
};

/// What a pod's plan needs from the manifest and the host, found once: the
/// CID is leased only after every check passed, and adds nothing to find.
#[derive(Clone)]
pub(super) struct Draft {
    pub dir: PodDir,
    pub pod: PodManifest,
    kernel: host::Kernel,
    stage1: Stage1,
    roots: RootsPlan,
    images: Vec<String>,
    accel: Choice,
    vm_bin: PathBuf,
    image: PathBuf,
    /// vhost-device-vsock, for hybrid vsock; `None`: the host's AF_VSOCK.
    vhost_program: Option<PathBuf>,
    /// passt or pasta, for a user-mode network on a backend that needs
    /// one.
    net_helper: Option<PathBuf>,
    shares: Vec<Share>,
    aliases: Vec<Alias>,
    machine: MachineChoice,
    notes: Notes,
}

/// How strictly the host is checked.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    /// `run`: what the host lacks is an error.
    Strict,
    /// `args`: what the host lacks is noted, and the command lines are
    /// shown as they would be; nothing is written.
    Show,
}

/// A program this host lacks: an error when strict, else a note and its
/// bare name.
fn lacking(
    notes: &mut Notes,
    check: Check,
    found: Result<PathBuf, VmmError>,
    bare: &str,
) -> Result<PathBuf, VmmError> {
    match found {
        Ok(p) => Ok(p),
        Err(e) if check == Check::Show => {
            notes.warn(format!("cannot run here: {e}"));
            Ok(PathBuf::from(bare))
        }
        Err(e) => Err(e),
    }
}

/// The vsock device for the pod, and why.
fn choose_vsock(
    o: &RunOptions,
    hv: &dyn Hypervisor,
    check: Check,
    notes: &mut Notes,
) -> Result<VsockKind, VmmError> {
    let wanted = if !hv.supports_hybrid_vsock() && check == Check::Show {
        VsockMode::Vhost
    } else {
        o.vsock
    };
    let (kind, why) = match vsock::choose(wanted, Path::new(VHOST_VSOCK_DEV)) {
        Ok(c) => c,
        Err(e) if check == Check::Show => {
            notes.warn(format!("cannot run here: {e}"));
            (VsockKind::Vhost, format!("{} needs it", hv.display_name()))
        }
        Err(e) => return Err(e),
    };
    if kind == VsockKind::Hybrid && !hv.supports_hybrid_vsock() {
        return Err(VmmError::Unavailable(format!(
            "{} needs the host's vhost-vsock (AF_VSOCK), which is not usable here: {why}",
            hv.display_name()
        )));
    }
    notes.choose("vsock", format!("{}: {why}", kind.describe()));
    Ok(kind)
}

/// Validates the manifest and the host for a pod that would live in `dir`.
pub(super) fn draft(o: &RunOptions, dir: PodDir, check: Check) -> Result<Draft, LaunchError> {
    let mut pod = source_manifest(o)?;
    if let Some(name) = &o.name {
        names::check(name)?;
        if let Some(holder) = names::lookup(&o.state_dir, name) {
            return Err(PodError::Invalid(format!(
                "the name {name:?} is in use by pod {holder} (remove it with `host-ctl rm {name}`, or choose another name)"
            ))
            .into());
        }
    }
    let agent = host::agent(o.agent.as_deref())?;
    let kernel = host::kernel(o.kernel.as_deref(), o.modules_dir.as_deref())?;
    let hv = hypervisor(o.hypervisor);
    let accel = accel::choose(o.accel)?;
    let mut notes = Notes::default();
    notes.choose(
        "accelerator",
        format!("{}: {}", accel.accel.name(), accel.reason),
    );
    let routed = network::host_has_default_route();
    apply_network_options(&mut pod, o, hv, routed, &mut notes);
    let kind = choose_vsock(o, hv, check, &mut notes)?;
    let vm_bin = lacking(&mut notes, check, hv.program(), hv.program_name())?;
    let cache = match check {
        Check::Strict => Cache::Write,
        Check::Show => Cache::ReadOnly,
    };
    let image = hv.boot_image(&kernel.image, &cache_dir(&o.state_dir), cache);
    let stage1 = stage1(o, &agent, &kernel, cache)?;
    let store = match check {
        Check::Strict => roots::Store::Write,
        Check::Show => roots::Store::ReadOnly,
    };
    let (roots, images) = roots::plan(&mut pod, &o.state_dir, store)?;
    // What an image filled in is checked as if the manifest had said it.
    validate(o, &pod)?;
    let (shares, aliases) = hv.export_shares(&pod_shares(&pod, &dir, o.origin), &dir.aliases_dir());
    let vhost_program = match kind {
        VsockKind::Vhost => None,
        VsockKind::Hybrid => Some(lacking(
            &mut notes,
            check,
            vsock::vhost_device_vsock(),
            "vhost-device-vsock",
        )?),
    };
    let net_helper = network_host(&pod, routed, hv, check, &mut notes)?;
    let machine = hv.machine(shares.len(), accel.accel, o.tsc_khz);
    for n in &machine.notes {
        notes.choose("machine", n.clone());
    }
    Ok(Draft {
        dir,
        pod,
        kernel,
        stage1,
        roots,
        images,
        accel,
        vm_bin,
        image,
        vhost_program,
        net_helper,
        shares,
        aliases,
        machine,
        notes,
    })
}

/// The pod as the user gave it: a manifest, an image's app, or none (a
/// VM of the warm pool).
fn source_manifest(o: &RunOptions) -> Result<PodManifest, LaunchError> {
    Ok(match &o.source {
        PodSource::Manifest(path) => kvmpod_api::validate::load(path)?,
        PodSource::Image(run) => run.manifest()?,
        PodSource::PoolMember => PodManifest {
            hostname: None,
            volumes: Vec::new(),
            apps: Vec::new(),
            sandbox: false,
            network: Default::default(),
        },
    })
}

/// Checks the pod as planned (what an image filled in included); a VM of
/// the warm pool has no pod to check.
fn validate(o: &RunOptions, pod: &PodManifest) -> Result<(), LaunchError> {
    let errors = match o.source {
        PodSource::PoolMember => Vec::new(),
        _ => kvmpod_api::validate::validate(pod),
    };
    if errors.is_empty() {
        return Ok(());
    }
    Err(kvmpod_api::validate::ManifestError::Invalid {
        path: o.shown_source(),
        errors,
    }
    .into())
}

/// What the pod's network needs of the host: passt for a user-mode
/// network on a backend without its own (pasta for lkvm's outbound
/// connections), free ports, an existing tap or namespace (checked only
/// when the pod is to run). passt and pasta take their addresses from the
/// host's external interface (`routed`: the host has an IPv4 default
/// route): without one, user-mode networking on QEMU is refused with the
/// ways out.
fn network_host(
    pod: &PodManifest,
    routed: bool,
    hv: &dyn Hypervisor,
    check: Check,
    notes: &mut Notes,
) -> Result<Option<PathBuf>, LaunchError> {
    let net = &pod.network;
    let helper = match (net.mode, hv.user_net()) {
        (NetworkMode::User, UserNet::Passt) if !routed && check == Check::Strict => {
            return Err(LaunchError::Host(
                "user-mode networking (passt) takes its addresses from the host's external interface, and this host has no IPv4 default route: run the pod with --net none (loopback only) or --net tap".into(),
            ))
        }
        (NetworkMode::User, UserNet::Passt) => {
            Some(lacking(notes, check, network::passt(), "passt")?)
        }
        (NetworkMode::User, UserNet::Builtin) if !net.host_loopback && !routed => {
            notes.warn(format!(
                "network user: no outbound connections from {}'s network, as this host has no IPv4 default route",
                hv.display_name()
            ));
            None
        }
        (NetworkMode::User, UserNet::Builtin) if !net.host_loopback => {
            Some(lacking(notes, check, network::pasta(), "pasta")?)
        }
        _ => None,
    };
    if check == Check::Strict {
        network::check_host(&pod.network)?;
    }
    Ok(helper)
}

/// `--net` replaces the manifest's mode (keeping its ports); `-p` adds
/// ports. The result is validated with the rest of the manifest. A pod
/// that left its network to the default gets none, and a note saying so,
/// where the default (user mode on passt) cannot work: on a host with no
/// IPv4 default route (`routed` false).
fn apply_network_options(
    pod: &mut PodManifest,
    o: &RunOptions,
    hv: &dyn Hypervisor,
    routed: bool,
    notes: &mut Notes,
) {
    let chosen = !pod.network.is_default() || o.network.is_some() || !o.publish.is_empty();
    if let Some(net) = &o.network {
        let ports = std::mem::take(&mut pod.network.ports);
        pod.network = net.clone();
        pod.network.ports = ports;
    }
    pod.network.ports.extend(o.publish.iter().copied());
    if !chosen && !routed && hv.user_net() == UserNet::Passt {
        pod.network.mode = NetworkMode::None;
        notes.warn(
            "network none: this host has no IPv4 default route, which user-mode networking (passt) needs (--net none chooses this and says nothing; --net user makes it an error)",
        );
    }
}

/// The plan with guest CID `cid`: the VM's command lines.
pub(super) fn finish(o: &RunOptions, d: Draft, cid: u32) -> Result<PodPlan, LaunchError> {
    let dir = d.dir;
    let hv = hypervisor(o.hypervisor);
    let (vsock, endpoint, backend) = match d.vhost_program {
        Some(program) => (
            VsockDevice::VhostUser {
                socket: dir.vhost_socket(),
            },
            Endpoint::Hybrid {
                socket: dir.vsock_socket(),
                cid,
            },
            Some(Program {
                program,
                args: vsock::vhost_device_vsock_args(cid, &dir.vhost_socket(), &dir.vsock_socket()),
            }),
        ),
        None => (VsockDevice::Kernel { cid }, Endpoint::Vhost { cid }, None),
    };
    let net = network::plan(&d.pod.network, hv, &dir, cid, d.net_helper)?;
    let config = VmConfig {
        name: dir.id.clone(),
        machine: d.machine.machine,
        kernel: d.image,
        initrd: d.stage1.path.clone(),
        cmdline: cmdline(o, hv, &d.machine, net.device.is_some()),
        memory_mib: o.memory_mib,
        cpus: o.cpus,
        accel: d.accel.accel,
        console_log: dir.console_log(),
        shares: d.shares,
        vsock,
        net: net.device.clone(),
    };
    let mut vm = Program {
        program: d.vm_bin,
        args: hv.argv(&config)?,
    };
    if let Some(jail) = hv.jail(&config, &vm.program, &dir.vmm_jail()) {
        vm = jail.wrap(&host_ctl_exe()?, vm);
    }
    let launch = VmLaunch {
        hypervisor: o.hypervisor,
        vm,
        vsock_backend: backend,
        net_backend: net.backend.clone(),
        net_backend_socket: net.backend_socket.clone(),
        netns: net.netns.as_ref().map(|ns| ns.path().to_path_buf()),
        relayed_ports: net.relayed_ports.clone(),
        tap_wiring: net.wiring.clone(),
        endpoint,
        boot_timeout_secs: o.boot_timeout.as_secs(),
        grace_ms: u32::try_from(o.grace.as_millis()).unwrap_or(u32::MAX),
        accel: d.accel.accel,
        tsc_khz: d.machine.tsc_khz,
        log_rotation: o.log_rotation,
    };
    Ok(PodPlan {
        dir,
        pod: d.pod,
        kernel: d.kernel,
        stage1: d.stage1,
        roots: d.roots,
        images: d.images,
        launch,
        aliases: d.aliases,
        cid,
        transport: d.machine.machine.transport_module(),
        guest_net: net.guest.clone(),
        net,
        notes: d.notes,
    })
}

/// The stage1 image the pod boots: the one asked for, or the one for this
/// agent and kernel (built now if there is none and `cache` allows).
fn stage1(
    o: &RunOptions,
    agent: &Path,
    kernel: &host::Kernel,
    cache: Cache,
) -> Result<Stage1, LaunchError> {
    let store = Stage1Store::new(&o.state_dir);
    let image = match &o.stage1 {
        Some(reference) => store.find(reference)?,
        None => store.ensure(
            agent,
            kernel.modules.as_deref(),
            o.gzip_initramfs,
            cache == Cache::Write,
        )?,
    };
    image.check_kernel(kernel.modules.as_deref())?;
    Ok(image)
}

/// The pod's own share (its settings, manifest and app layers), then a
/// sandbox pod's apps share and its host volumes; or, for a VM of the
/// warm pool, the one volumes share they are bound into.
fn pod_shares(pod: &PodManifest, dir: &crate::pod::PodDir, origin: VmOrigin) -> Vec<Share> {
    let mut shares = vec![Share {
        tag: kvmpod_api::layout::POD_SHARE_TAG.to_string(),
        source: dir.guest_dir(),
        read_only: true,
    }];
    if origin == VmOrigin::Pooled {
        shares.push(Share {
            tag: kvmpod_api::layout::POOL_VOLUMES_TAG.to_string(),
            source: dir.pool_volumes(),
            read_only: false,
        });
        return shares;
    }
    if pod.sandbox {
        shares.push(Share {
            tag: kvmpod_api::layout::APPS_SHARE_TAG.to_string(),
            source: dir.apps_share(),
            read_only: false,
        });
    }
    shares.extend(host_shares(pod));
    shares
}

/// The guest kernel's command line: the backend's parameters, and what
/// the agent must know before it can read the pod's share.
fn cmdline(o: &RunOptions, hv: &dyn Hypervisor, machine: &MachineChoice, net: bool) -> String {
    let mut ours = vec![
        format!(
            "{}={}",
            kvmpod_api::layout::TRANSPORT_ENV,
            machine.machine.transport_module()
        ),
        format!("{}={}", kvmpod_api::layout::VM_END_ENV, hv.vm_end().param()),
    ];
    if net {
        ours.push(format!("{}=1", kvmpod_api::layout::NET_ENV));
    }
    if o.origin == VmOrigin::Pooled {
        ours.push(format!("{}=1", kvmpod_api::layout::POOL_ENV));
    }
    let mut params: Vec<&str> = hv.kernel_params().to_vec();
    params.extend(ours.iter().map(String::as_str));
    kernel_cmdline(o.debug, machine.tsc_khz, &params)
}

/// The running host-ctl, which also sets up a hypervisor's jail.
fn host_ctl_exe() -> Result<PathBuf, LaunchError> {
    std::env::current_exe()
        .map_err(|e| LaunchError::Host(format!("finding host-ctl's own path: {e}")))
}

/// The plan for a pod that is not created: for `host-ctl args`. It writes
/// nothing, not even the kernel cache.
pub fn plan(o: &RunOptions) -> Result<PodPlan, LaunchError> {
    let dir = PodDir::planned(&o.state_dir);
    let cid = cids::peek(&o.state_dir);
    let d = draft(o, dir, Check::Show)?;
    finish(o, d, cid)
}
