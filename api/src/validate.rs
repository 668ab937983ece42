//! Manifest loading and validation.
//!
//! Every rule names the field it refuses (`apps[1].mountPoints[0].volume`),
//! and all problems are reported at once so a user fixes a manifest in one
//! pass. Structural rules ([`validate`]) run on the host and again in the
//! guest; rules about host paths ([`resolve_host_paths`]) only on the host.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::manifest::{App, PodManifest, Volume, VolumeKind};
use crate::network::{Network, NetworkMode};
use crate::tag::nine_p_tag;

/// The longest app or volume name accepted.
pub const MAX_NAME_LEN: usize = 63;

/// Host volumes each take a virtio device; QEMU puts many behind PCI
/// bridges (host-ctl's qemu.rs), lkvm has one PCI bus.
pub const MAX_HOST_VOLUMES: usize = 120;

/// One problem with one field of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where, as a path into the JSON document: `apps[0].exec`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Why a manifest file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read pod manifest {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("pod manifest {}: {error}", path.display())]
    Parse { path: PathBuf, error: FieldError },
    #[error("pod manifest {} is invalid:\n{}", path.display(), list(errors))]
    Invalid {
        path: PathBuf,
        errors: Vec<FieldError>,
    },
}

fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads, parses and fully validates a manifest file on the host. Relative
/// `source` and `rootfs` paths are resolved against the file's directory and
/// replaced by their canonical absolute paths.
pub fn load(path: &Path) -> Result<PodManifest, ManifestError> {
    load_with(path, &[])
}

/// Reads and validates the manifest of an app to add to a running pod
/// whose volumes are `pod_volumes`: one app, whose mount points may name
/// the pod's volumes as well as those the manifest brings. Returns the
/// manifest with its own volumes only.
pub fn load_added(path: &Path, pod_volumes: &[Volume]) -> Result<PodManifest, ManifestError> {
    load_with(path, pod_volumes)
}

fn load_with(path: &Path, pod_volumes: &[Volume]) -> Result<PodManifest, ManifestError> {
    let text = fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut pod = parse(&text).map_err(|error| ManifestError::Parse {
        path: path.to_path_buf(),
        error,
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut whole = pod.clone();
    whole.volumes.extend(
        pod_volumes
            .iter()
            .filter(|v| pod.volume(&v.name).is_none())
            .cloned(),
    );
    let mut errors = validate(&whole);
    if !pod_volumes.is_empty() && pod.apps.len() != 1 {
        errors.push(FieldError::new(
            "apps",
            "an app added to a running pod comes as a manifest of exactly one app",
        ));
    }
    errors.extend(resolve_host_paths(&mut pod, base));
    if errors.is_empty() {
        Ok(pod)
    } else {
        Err(ManifestError::Invalid {
            path: path.to_path_buf(),
            errors,
        })
    }
}

/// Parses manifest JSON; unknown fields and wrong types are refused with
/// the path of the field and the line and column.
pub fn parse(text: &str) -> Result<PodManifest, FieldError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        FieldError::new(field, e.inner().to_string())
    })
}

/// The structural rules, which need no file system. Problems are listed in
/// document order: the pod's own fields, its volumes, then each app.
pub fn validate(pod: &PodManifest) -> Vec<FieldError> {
    let mut errs = Vec::new();
    check_pod(&mut errs, pod);
    check_volumes(&mut errs, pod);
    check_network(&mut errs, &pod.network);
    let mut app_names: HashMap<&str, usize> = HashMap::new();
    for (i, app) in pod.apps.iter().enumerate() {
        let at = format!("apps[{i}]");
        check_name(&mut errs, &format!("{at}.name"), &app.name);
        if let Some(first) = app_names.insert(&app.name, i) {
            errs.push(FieldError::new(
                format!("{at}.name"),
                format!("{:?} is also the name of apps[{first}]", app.name),
            ));
        }
        check_app(&mut errs, pod, &at, app);
    }
    errs
}

/// The pod's own fields: at least one app, and a valid hostname.
fn check_pod(errs: &mut Vec<FieldError>, pod: &PodManifest) {
    if pod.apps.is_empty() {
        errs.push(FieldError::new("apps", "a pod needs at least one app"));
    }
    if let Some(h) = &pod.hostname {
        let label = !h.is_empty()
            && h.len() <= MAX_NAME_LEN
            && !h.starts_with('-')
            && !h.ends_with('-')
            && h.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !label {
            errs.push(FieldError::new(
                "hostname",
                format!("{h:?} is not a hostname: use lowercase letters, digits and '-', at most {MAX_NAME_LEN}"),
            ));
        }
    }
}

/// The network's fields fit its mode, and no host port is published twice.
fn check_network(errs: &mut Vec<FieldError>, net: &Network) {
    let mode = net.mode;
    if net.host_loopback && mode != NetworkMode::User {
        errs.push(FieldError::new(
            "network.hostLoopback",
            "only user-mode networking has a gateway to the host's loopback",
        ));
    }
    match (mode, &net.tap, &net.netns) {
        (NetworkMode::Tap, None, None) => errs.push(FieldError::new(
            "network",
            "tap mode needs a tap device (\"tap\") or a network namespace (\"netns\")",
        )),
        (NetworkMode::Tap, Some(_), Some(_)) => errs.push(FieldError::new(
            "network",
            "give a tap device or a network namespace, not both",
        )),
        (NetworkMode::Tap, _, _) => {}
        (_, Some(_), _) | (_, _, Some(_)) => errs.push(FieldError::new(
            "network",
            format!(
                "\"tap\" and \"netns\" belong to tap mode, not {}",
                mode.name()
            ),
        )),
        _ => {}
    }
    if let Some(dev) = &net.tap {
        if dev.is_empty()
            || dev.len() > 15
            || dev.contains(['/', ' ', ':', ',', '='])
            || dev == "."
            || dev == ".."
        {
            errs.push(FieldError::new(
                "network.tap",
                format!("{dev:?} is not a network interface name (at most 15 characters, no '/', ':', ',', '=' or space)"),
            ));
        }
    }
    match (&net.tap, &net.address) {
        (Some(_), None) => errs.push(FieldError::new(
            "network.address",
            "a tap device needs the guest's address (\"10.0.0.2/24\")",
        )),
        (None, Some(_)) | (None, None) if net.gateway.is_some() || net.address.is_some() => errs
            .push(FieldError::new(
                "network.address",
                "address and gateway go with a tap device; a namespace's interface brings its own",
            )),
        (Some(_), Some(a)) if crate::network::parse_cidr(a).is_none() => {
            errs.push(FieldError::new(
                "network.address",
                format!("{a:?} is not ADDRESS/PREFIX (IPv4)"),
            ))
        }
        _ => {}
    }
    if let Some(ns) = &net.netns {
        if !ns.is_absolute() {
            errs.push(FieldError::new(
                "network.netns",
                format!("{} is not an absolute path", ns.display()),
            ));
        }
    }
    check_ports(errs, net);
}

/// Published ports: only in user mode, each host port once per protocol.
fn check_ports(errs: &mut Vec<FieldError>, net: &Network) {
    let mode = net.mode;
    if !net.ports.is_empty() && mode != NetworkMode::User {
        let why = match mode {
            NetworkMode::Tap => "a tap pod's ports are published by its network (CNI's portmap plugin), not by kvmpod",
            _ => "a pod without a network has no ports to publish; use host-ctl port-forward",
        };
        errs.push(FieldError::new("network.ports", why));
    }
    let mut seen: HashMap<(u16, crate::network::Protocol), usize> = HashMap::new();
    for (i, p) in net.ports.iter().enumerate() {
        if let Some(first) = seen.insert((p.host_port, p.protocol), i) {
            errs.push(FieldError::new(
                format!("network.ports[{i}]"),
                format!(
                    "host port {}/{} is also published by network.ports[{first}]",
                    p.host_port,
                    p.protocol.name()
                ),
            ));
        }
    }
}

/// Every volume: unique names, the fields of its kind, distinct 9p tags,
/// and no more host volumes than the VM can attach.
fn check_volumes(errs: &mut Vec<FieldError>, pod: &PodManifest) {
    let mut volume_names: HashMap<&str, usize> = HashMap::new();
    let mut tags: HashMap<String, usize> = HashMap::new();
    let mut host_volumes = 0;
    for (i, v) in pod.volumes.iter().enumerate() {
        let at = format!("volumes[{i}]");
        check_name(errs, &format!("{at}.name"), &v.name);
        if let Some(first) = volume_names.insert(&v.name, i) {
            errs.push(FieldError::new(
                format!("{at}.name"),
                format!("{:?} is also the name of volumes[{first}]", v.name),
            ));
        }
        match v.kind {
            VolumeKind::Host => {
                host_volumes += 1;
                check_host_volume(errs, &at, v);
                let tag = nine_p_tag(&v.name);
                if let Some(other) = tags.insert(tag.clone(), i) {
                    errs.push(FieldError::new(
                        format!("{at}.name"),
                        format!(
                            "its 9p tag {tag:?} is also the tag of volumes[{other}]; rename one"
                        ),
                    ));
                }
            }
            VolumeKind::Empty => check_empty_volume(errs, &at, v),
        }
    }
    if host_volumes > MAX_HOST_VOLUMES {
        errs.push(FieldError::new(
            "volumes",
            format!("{host_volumes} host volumes; at most {MAX_HOST_VOLUMES} are supported"),
        ));
    }
}

/// A host volume shares a host directory, and keeps that directory's
/// ownership and mode.
fn check_host_volume(errs: &mut Vec<FieldError>, at: &str, v: &Volume) {
    if v.source.is_none() {
        errs.push(FieldError::new(
            format!("{at}.source"),
            "a host volume needs the host directory to share",
        ));
    }
    for (field, set) in [
        ("mode", v.mode.is_some()),
        ("uid", v.uid.is_some()),
        ("gid", v.gid.is_some()),
        ("size", v.size.is_some()),
    ] {
        if set {
            errs.push(FieldError::new(
                format!("{at}.{field}"),
                "applies only to empty volumes; a host volume keeps its directory's",
            ));
        }
    }
}

/// An empty volume is a fresh tmpfs: no source, and a size above 0.
fn check_empty_volume(errs: &mut Vec<FieldError>, at: &str, v: &Volume) {
    if v.source.is_some() {
        errs.push(FieldError::new(
            format!("{at}.source"),
            "an empty volume has no source (did you mean kind \"host\"?)",
        ));
    }
    if v.size == Some(0) {
        errs.push(FieldError::new(format!("{at}.size"), "must be above 0"));
    }
}

/// One app's fields (its name is checked with the others', for
/// uniqueness), reported under `at` (`apps[1]`).
fn check_app(errs: &mut Vec<FieldError>, pod: &PodManifest, at: &str, app: &App) {
    match (app.rootfs.as_os_str().is_empty(), &app.image) {
        (true, None) => errs.push(FieldError::new(
            format!("{at}.rootfs"),
            "must name a directory or tar archive (or give the app an \"image\")",
        )),
        (false, Some(_)) => errs.push(FieldError::new(
            format!("{at}.image"),
            "an app has either a rootfs or an image, not both",
        )),
        (true, Some(image)) if image.trim().is_empty() => errs.push(FieldError::new(
            format!("{at}.image"),
            "must name an image (it is empty)",
        )),
        _ => {}
    }
    // An image's configuration may give the program: host-ctl fills it in.
    if app.image.is_none() || !app.exec.is_empty() {
        check_exec(errs, at, app);
    }
    if app.image.is_none() && !app.args.is_empty() {
        errs.push(FieldError::new(
            format!("{at}.args"),
            "replaces an image's Cmd: only an app with an \"image\" takes it (put the arguments in \"exec\")",
        ));
    }
    check_env(errs, at, app);
    check_identity(errs, at, app);
    check_resources(errs, at, app);
    check_isolation(errs, at, app);
    check_logging(errs, at, app);
    if let Some(wd) = &app.working_directory {
        guest_path(errs, &format!("{at}.workingDirectory"), wd);
    }
    if let Some(Err(e)) = app.stop_signal.as_deref().map(crate::signal::parse) {
        errs.push(FieldError::new(format!("{at}.stopSignal"), e.to_string()));
    }
    // Paths taken by the app's mounts so far, and by which mount.
    let mut taken: HashMap<String, String> = HashMap::new();
    for (j, t) in app.tmpfs.iter().enumerate() {
        let f = format!("{at}.tmpfs[{j}]");
        let mount = MountAt {
            name: format!("tmpfs[{j}]"),
            covers_root: "\"/\" would cover the app's whole root",
        };
        check_mount_path(errs, &f, &t.path, mount, &mut taken);
        if t.size == Some(0) {
            errs.push(FieldError::new(format!("{f}.size"), "must be above 0"));
        }
    }
    for (j, mp) in app.mount_points.iter().enumerate() {
        let f = format!("{at}.mountPoints[{j}]");
        if pod.volume(&mp.volume).is_none() {
            errs.push(FieldError::new(
                format!("{f}.volume"),
                format!(
                    "no volume is named {:?} ({})",
                    mp.volume,
                    known_volumes(pod)
                ),
            ));
        }
        let mount = MountAt {
            name: format!("mountPoints[{j}]"),
            covers_root: "\"/\" would cover the app's whole root; mount the volume at a directory",
        };
        check_mount_path(errs, &f, &mp.path, mount, &mut taken);
        if let Some(sub) = &mp.sub_path {
            if let Err(why) = check_sub_path(sub) {
                errs.push(FieldError::new(format!("{f}.subPath"), why));
            }
        }
    }
}

/// A sub-path stays inside its volume: relative, no `..`, not empty.
fn check_sub_path(sub: &str) -> Result<(), String> {
    let path = Path::new(sub);
    if sub.is_empty() || sub.contains('\0') {
        return Err("must name a file or directory of the volume".into());
    }
    if path.is_absolute() {
        return Err(format!("{sub:?} must be relative to the volume"));
    }
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!("{sub:?} must not leave the volume (no \"..\")"));
    }
    Ok(())
}

/// The pod's volume names, for a mount point that names none of them.
fn known_volumes(pod: &PodManifest) -> String {
    let known: Vec<&str> = pod.volumes.iter().map(|v| v.name.as_str()).collect();
    if known.is_empty() {
        "the pod has no volumes".to_string()
    } else {
        format!("the pod has: {}", known.join(", "))
    }
}

/// The program to run, and arguments the kernel can pass on.
fn check_exec(errs: &mut Vec<FieldError>, at: &str, app: &App) {
    match app.exec.first() {
        None => errs.push(FieldError::new(
            format!("{at}.exec"),
            "must name the program to run (it is empty)",
        )),
        Some(p) if p.is_empty() => errs.push(FieldError::new(
            format!("{at}.exec[0]"),
            "must name the program to run (it is an empty string)",
        )),
        Some(_) => {}
    }
    for (j, arg) in app.exec.iter().enumerate() {
        if arg.contains('\0') {
            errs.push(FieldError::new(
                format!("{at}.exec[{j}]"),
                "contains a NUL character",
            ));
        }
    }
}

/// Environment variables: names an environment can hold, each set once.
fn check_env(errs: &mut Vec<FieldError>, at: &str, app: &App) {
    let mut env_names: HashMap<&str, usize> = HashMap::new();
    for (j, var) in app.env.iter().enumerate() {
        let f = format!("{at}.env[{j}]");
        if var.name.is_empty() || var.name.contains(['=', '\0']) {
            errs.push(FieldError::new(
                format!("{f}.name"),
                format!(
                    "{:?} is not a valid variable name (it must be non-empty, without '=' or NUL)",
                    var.name
                ),
            ));
        }
        if var.value.contains('\0') {
            errs.push(FieldError::new(
                format!("{f}.value"),
                "contains a NUL character",
            ));
        }
        if let Some(first) = env_names.insert(&var.name, j) {
            errs.push(FieldError::new(
                format!("{f}.name"),
                format!("{:?} is also set by env[{first}]", var.name),
            ));
        }
    }
}

/// `user` and `group`: a name the image's files can hold, or an id.
fn check_identity(errs: &mut Vec<FieldError>, at: &str, app: &App) {
    for (field, value) in [("user", &app.user), ("group", &app.group)] {
        if let Some(v) = value {
            if v.is_empty() || v.contains([':', '\0', '\n']) {
                errs.push(FieldError::new(
                    format!("{at}.{field}"),
                    format!("{v:?} is neither a name nor a number"),
                ));
            } else if v.bytes().all(|b| b.is_ascii_digit()) && v.parse::<u32>().is_err() {
                errs.push(FieldError::new(
                    format!("{at}.{field}"),
                    format!("{v} is out of range for an id"),
                ));
            }
        }
    }
}

/// Resource limits within what the guest's cgroups accept.
fn check_resources(errs: &mut Vec<FieldError>, at: &str, app: &App) {
    let r = &app.resources;
    if r.memory_limit.is_some_and(|m| m < 1 << 20) {
        errs.push(FieldError::new(
            format!("{at}.resources.memoryLimit"),
            "must be at least 1M",
        ));
    }
    if r.cpu_weight.is_some_and(|w| !(1..=10_000).contains(&w)) {
        errs.push(FieldError::new(
            format!("{at}.resources.cpuWeight"),
            "must be between 1 and 10000",
        ));
    }
    if r.pids_limit == Some(0) {
        errs.push(FieldError::new(
            format!("{at}.resources.pidsLimit"),
            "must be above 0",
        ));
    }
}

/// The smallest and largest `logBufferSize`: below a pipe's worth the app
/// would wait on the host for every few lines; above, one app's unpersisted
/// output could take most of a guest's memory.
pub const LOG_BUFFER_SIZES: std::ops::RangeInclusive<u64> = (64 << 10)..=(1 << 30);

/// The app's log buffer, within what the guest can hold.
fn check_logging(errs: &mut Vec<FieldError>, at: &str, app: &App) {
    if let Some(size) = app.log_buffer_size {
        if !LOG_BUFFER_SIZES.contains(&size) {
            errs.push(FieldError::new(
                format!("{at}.logBufferSize"),
                format!("{size} bytes is outside 64K to 1G"),
            ));
        }
    }
}

/// Normalises a path inside the app's root, reporting it under `field`
/// when it is not one.
fn guest_path(errs: &mut Vec<FieldError>, field: &str, path: &str) -> Option<String> {
    match normalize_guest_path(path) {
        Ok(p) => Some(p),
        Err(why) => {
            errs.push(FieldError::new(field, why.to_string()));
            None
        }
    }
}

/// A mount in an app's root, as the checks of its path name it.
struct MountAt {
    /// How other mounts' errors refer to it: `tmpfs[0]`.
    name: String,
    /// Why it may not be mounted at `/`.
    covers_root: &'static str,
}

/// A mount's `path` (reported at `{field}.path`): a guest path, not `/`,
/// and not the path of another mount of the app (`taken`).
fn check_mount_path(
    errs: &mut Vec<FieldError>,
    field: &str,
    path: &str,
    mount: MountAt,
    taken: &mut HashMap<String, String>,
) {
    let field = format!("{field}.path");
    match guest_path(errs, &field, path) {
        None => {}
        Some(p) if p == "/" => errs.push(FieldError::new(field, mount.covers_root)),
        Some(p) => {
            if let Some(first) = taken.insert(p.clone(), mount.name) {
                errs.push(FieldError::new(
                    field,
                    format!("{p:?} is also the path of {first}"),
                ));
            }
        }
    }
}

/// Capabilities, rlimits, the OOM score and the restart policy of an app.
fn check_isolation(errs: &mut Vec<FieldError>, at: &str, app: &App) {
    use crate::limits::{capability, rlimit};
    use crate::manifest::RestartPolicy;
    for (list, names) in [
        ("add", &app.capabilities.add),
        ("drop", &app.capabilities.drop),
    ] {
        for (j, n) in names.iter().enumerate() {
            if !n.eq_ignore_ascii_case("ALL") && capability(n).is_none() {
                errs.push(FieldError::new(
                    format!("{at}.capabilities.{list}[{j}]"),
                    format!("{n:?} is not a Linux capability (such as NET_ADMIN, or ALL)"),
                ));
            }
        }
    }
    let mut seen: HashMap<u32, usize> = HashMap::new();
    for (j, r) in app.rlimits.iter().enumerate() {
        let f = format!("{at}.rlimits[{j}]");
        match rlimit(&r.kind) {
            None => errs.push(FieldError::new(
                format!("{f}.type"),
                format!(
                    "{:?} is not a resource limit (such as nofile, nproc, core)",
                    r.kind
                ),
            )),
            Some(n) => {
                if let Some(first) = seen.insert(n, j) {
                    errs.push(FieldError::new(
                        format!("{f}.type"),
                        format!("{:?} is also set by rlimits[{first}]", r.kind),
                    ));
                }
            }
        }
        if r.hard.is_some_and(|h| h < r.soft) {
            errs.push(FieldError::new(
                format!("{f}.soft"),
                "is above the hard limit",
            ));
        }
    }
    if let Some(adj) = app.oom_score_adj {
        if !(-1000..=1000).contains(&adj) {
            errs.push(FieldError::new(
                format!("{at}.oomScoreAdj"),
                format!("{adj} is outside -1000 to 1000"),
            ));
        }
    }
    if app.max_restarts.is_some() && app.restart_policy == RestartPolicy::Never {
        errs.push(FieldError::new(
            format!("{at}.maxRestarts"),
            "applies only with restartPolicy \"on-failure\" or \"always\"",
        ));
    }
}

/// Resolves `source` and `rootfs` against `base` to canonical absolute
/// paths, checking that each exists and is of the right kind.
pub fn resolve_host_paths(pod: &mut PodManifest, base: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, v) in pod.volumes.iter_mut().enumerate() {
        let Some(source) = &v.source else { continue };
        let field = format!("volumes[{i}].source");
        match canonical(base, source) {
            Ok(p) if p.is_dir() => v.source = Some(p),
            Ok(p) => errs.push(FieldError::new(
                field,
                format!("{} is not a directory", p.display()),
            )),
            Err(e) => errs.push(FieldError::new(field, e.to_string())),
        }
    }
    for (i, app) in pod.apps.iter_mut().enumerate() {
        if app.rootfs.as_os_str().is_empty() {
            continue;
        }
        let field = format!("apps[{i}].rootfs");
        match canonical(base, &app.rootfs) {
            Ok(p) if p.is_dir() || p.is_file() => app.rootfs = p,
            Ok(p) => errs.push(FieldError::new(
                field,
                format!("{} is neither a directory nor a tar archive", p.display()),
            )),
            Err(e) => errs.push(FieldError::new(field, e.to_string())),
        }
    }
    errs
}

/// A host path of the manifest that cannot be resolved.
#[derive(Debug, thiserror::Error)]
enum HostPathError {
    #[error("{} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Unreadable { path: PathBuf, source: io::Error },
}

fn canonical(base: &Path, path: &Path) -> Result<PathBuf, HostPathError> {
    let joined = base.join(path);
    fs::canonicalize(&joined).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => HostPathError::Missing { path: joined },
        _ => HostPathError::Unreadable {
            path: joined,
            source,
        },
    })
}

fn check_name(errs: &mut Vec<FieldError>, field: &str, name: &str) {
    if let Err(why) = check_acname(name) {
        errs.push(FieldError::new(field, why.to_string()));
    }
}

/// Why a name is not an appc ACName.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "{0:?} is not a valid name: use lowercase letters, digits and single '-' between them"
    )]
    Malformed(String),
    #[error("{name:?} is {len} characters long; at most {MAX_NAME_LEN} are allowed")]
    TooLong { name: String, len: usize },
}

/// appc's ACName: lowercase letters and digits, in groups joined by single
/// `-`. Names become 9p tags, directory names and log prefixes.
pub fn check_acname(name: &str) -> Result<(), NameError> {
    let well_formed = !name.is_empty()
        && name.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if !well_formed {
        return Err(NameError::Malformed(name.to_string()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            name: name.to_string(),
            len: name.len(),
        });
    }
    Ok(())
}

/// Why a path is not a path inside an app's root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestPathError {
    #[error("contains a NUL character")]
    Nul,
    #[error("{0:?} must be an absolute path")]
    Relative(String),
    #[error("{0:?} must not contain \"..\"")]
    DotDot(String),
    #[error("{0:?} is not a Linux path")]
    NotLinux(String),
}

/// Checks a path inside an app's root and returns it normalised (no `.`,
/// no repeated or trailing `/`). Refuses relative paths and any `..`.
pub fn normalize_guest_path(path: &str) -> Result<String, GuestPathError> {
    if path.contains('\0') {
        return Err(GuestPathError::Nul);
    }
    if !path.starts_with('/') {
        return Err(GuestPathError::Relative(path.to_string()));
    }
    let mut out = String::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => {
                out.push('/');
                out.push_str(&part.to_string_lossy());
            }
            Component::ParentDir => return Err(GuestPathError::DotDot(path.to_string())),
            Component::Prefix(_) => return Err(GuestPathError::NotLinux(path.to_string())),
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{App, MountPoint, Volume};

    fn good() -> PodManifest {
        parse(
            r#"{
            "volumes": [
                {"name": "data", "kind": "host", "source": "/tmp"},
                {"name": "scratch", "kind": "empty"}
            ],
            "apps": [
                {"name": "one", "rootfs": "/tmp", "exec": ["/bin/true"],
                 "mountPoints": [{"volume": "data", "path": "/data"},
                                 {"volume": "scratch", "path": "/scratch"}]},
                {"name": "two", "rootfs": "/tmp", "exec": ["true"]}
            ]
        }"#,
        )
        .unwrap()
    }

    /// The single error `edit` causes in an otherwise good manifest.
    #[test]
    fn a_sub_path_stays_inside_its_volume() {
        assert!(check_sub_path("file").is_ok());
        assert!(check_sub_path("dir/./file").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../b"] {
            assert!(check_sub_path(bad).is_err(), "{bad:?}");
        }
        let e = one_error(|p| p.apps[0].mount_points[0].sub_path = Some("../up".into()));
        assert!(e.to_string().contains("subPath"), "{e}");
    }

    fn one_error(edit: impl FnOnce(&mut PodManifest)) -> FieldError {
        let mut pod = good();
        edit(&mut pod);
        let errs = validate(&pod);
        assert_eq!(errs.len(), 1, "expected one error, got {errs:?}");
        errs.into_iter().next().unwrap()
    }

    #[test]
    fn a_good_manifest_passes() {
        assert_eq!(validate(&good()), vec![]);
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in [
            "", "Data", "da_ta", "-data", "data-", "da--ta", "dätä", "a/b", "a.b",
        ] {
            // Without mount points, so that none dangles after the rename.
            let e = one_error(|p| {
                p.apps[0].mount_points.clear();
                p.volumes[0].name = bad.into();
            });
            assert_eq!(e.field, "volumes[0].name", "{bad}");
            assert!(e.message.contains("not a valid name"), "{e}");
        }
        let e = one_error(|p| p.apps[1].name = "Web_Server".into());
        assert_eq!(e.field, "apps[1].name");
        assert!(e.message.contains("\"Web_Server\" is not a valid name"));
        let e = one_error(|p| p.apps[1].name = "a".repeat(64));
        assert!(e.message.contains("at most 63"), "{e}");
        for ok in ["a", "0", "web-1", "a1-b2-c3"] {
            assert_eq!(check_acname(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn duplicates_are_refused() {
        let e = one_error(|p| p.apps[1].name = "one".into());
        assert_eq!(e.field, "apps[1].name");
        assert!(e.message.contains("also the name of apps[0]"), "{e}");

        let mut pod = good();
        pod.volumes[1].name = "data".into();
        let errs = validate(&pod);
        assert!(errs
            .iter()
            .any(|e| e.field == "volumes[1].name" && e.message.contains("volumes[0]")));

        let e = one_error(|p| p.apps[0].mount_points[1].path = "/data/".into());
        assert_eq!(e.field, "apps[0].mountPoints[1].path");
        assert!(e.message.contains("also the path of mountPoints[0]"), "{e}");
    }

    #[test]
    fn mount_point_of_a_missing_volume_is_refused() {
        let e = one_error(|p| p.apps[0].mount_points[0].volume = "dta".into());
        assert_eq!(e.field, "apps[0].mountPoints[0].volume");
        assert_eq!(
            e.message,
            "no volume is named \"dta\" (the pod has: data, scratch)"
        );
    }

    #[test]
    fn relative_and_dotdot_paths_are_refused() {
        let e = one_error(|p| p.apps[0].mount_points[0].path = "data".into());
        assert_eq!(e.field, "apps[0].mountPoints[0].path");
        assert!(e.message.contains("must be an absolute path"));
        let e = one_error(|p| p.apps[0].mount_points[0].path = "/data/../../etc".into());
        assert!(e.message.contains("must not contain \"..\""));
        let e = one_error(|p| p.apps[0].mount_points[0].path = "/".into());
        assert!(e.message.contains("whole root"));
        let e = one_error(|p| p.apps[0].working_directory = Some("srv".into()));
        assert_eq!(e.field, "apps[0].workingDirectory");
        let e = one_error(|p| p.apps[0].working_directory = Some("/srv/../..".into()));
        assert!(e.message.contains(".."));
    }

    #[test]
    fn a_stop_signal_must_be_a_signal() {
        let e = one_error(|p| p.apps[0].stop_signal = Some("SIGNOPE".into()));
        assert_eq!(e.field, "apps[0].stopSignal");
        let mut pod = parse(
            r#"{"apps": [{"name": "a", "rootfs": "/", "exec": ["x"], "stopSignal": "QUIT"}]}"#,
        )
        .unwrap();
        assert_eq!(validate(&pod), vec![]);
        pod.apps[0].stop_signal = Some("15".into());
        assert_eq!(validate(&pod), vec![]);
    }

    #[test]
    fn an_app_has_a_rootfs_or_an_image() {
        let e = one_error(|p| p.apps[0].image = Some("busybox".into()));
        assert_eq!(e.field, "apps[0].image");
        assert!(e.message.contains("not both"), "{e}");
        let e = one_error(|p| p.apps[0].rootfs = PathBuf::new());
        assert_eq!(e.field, "apps[0].rootfs");
        // An image may leave the program to its configuration.
        let mut pod = parse(r#"{"apps": [{"name": "a", "image": "busybox:latest"}]}"#).unwrap();
        assert_eq!(validate(&pod), vec![]);
        pod.apps[0].image = Some(" ".into());
        assert_eq!(validate(&pod)[0].field, "apps[0].image");
    }

    #[test]
    fn empty_exec_is_refused() {
        let e = one_error(|p| p.apps[0].exec.clear());
        assert_eq!(e.field, "apps[0].exec");
        assert!(e.message.contains("it is empty"));
        let e = one_error(|p| p.apps[0].exec = vec![String::new()]);
        assert_eq!(e.field, "apps[0].exec[0]");
        let e = one_error(|p| p.apps[0].exec.push("a\0b".into()));
        assert_eq!(e.field, "apps[0].exec[1]");
    }

    #[test]
    fn host_volume_rules() {
        let e = one_error(|p| p.volumes[0].source = None);
        assert_eq!(e.field, "volumes[0].source");
        assert!(e.message.contains("needs the host directory"));
        let e = one_error(|p| p.volumes[1].source = Some("/srv".into()));
        assert_eq!(e.field, "volumes[1].source");
        let e = one_error(|p| p.volumes[0].mode = Some(0o700));
        assert_eq!(e.field, "volumes[0].mode");
        assert!(e.message.contains("only to empty volumes"));
        let e = one_error(|p| p.volumes[1].size = Some(0));
        assert_eq!(e.field, "volumes[1].size");
    }

    #[test]
    fn env_user_and_group_rules() {
        let e = one_error(|p| {
            p.apps[0].env = vec![crate::manifest::EnvVar {
                name: "A=B".into(),
                value: "c".into(),
            }]
        });
        assert_eq!(e.field, "apps[0].env[0].name");
        let e = one_error(|p| {
            let v = crate::manifest::EnvVar {
                name: "A".into(),
                value: "c".into(),
            };
            p.apps[0].env = vec![v.clone(), v];
        });
        assert_eq!(e.field, "apps[0].env[1].name");
        let e = one_error(|p| p.apps[0].user = Some("99999999999".into()));
        assert_eq!(e.field, "apps[0].user");
        assert!(e.message.contains("out of range"));
        let e = one_error(|p| p.apps[0].group = Some("a:b".into()));
        assert_eq!(e.field, "apps[0].group");
    }

    #[test]
    fn isolation_options_are_checked() {
        let e = one_error(|p| p.apps[0].capabilities.add = vec!["CAP_WIZARDRY".into()]);
        assert_eq!(e.field, "apps[0].capabilities.add[0]");
        assert!(e.message.contains("not a Linux capability"), "{e}");
        let e = one_error(|p| p.apps[0].capabilities.drop = vec!["ALL".into(), "nope".into()]);
        assert_eq!(e.field, "apps[0].capabilities.drop[1]");
        let r = |kind: &str, soft, hard| crate::manifest::Rlimit {
            kind: kind.into(),
            soft,
            hard,
        };
        let e = one_error(|p| p.apps[0].rlimits = vec![r("files", 1, None)]);
        assert_eq!(e.field, "apps[0].rlimits[0].type");
        let e = one_error(|p| p.apps[0].rlimits = vec![r("nofile", 10, Some(5))]);
        assert_eq!(e.field, "apps[0].rlimits[0].soft");
        let e = one_error(|p| p.apps[0].rlimits = vec![r("nofile", 1, None), r("NOFILE", 2, None)]);
        assert_eq!(e.field, "apps[0].rlimits[1].type");
        let e = one_error(|p| p.apps[0].oom_score_adj = Some(1001));
        assert_eq!(e.field, "apps[0].oomScoreAdj");
        let e = one_error(|p| p.apps[0].max_restarts = Some(3));
        assert_eq!(e.field, "apps[0].maxRestarts");
        let e = one_error(|p| p.hostname = Some("Bad_Host".into()));
        assert_eq!(e.field, "hostname");
        let t = |path: &str| crate::manifest::TmpfsMount {
            path: path.into(),
            size: None,
            mode: None,
        };
        let e = one_error(|p| p.apps[0].tmpfs = vec![t("/data")]);
        assert_eq!(e.field, "apps[0].mountPoints[0].path");
        assert!(e.message.contains("tmpfs[0]"), "{e}");
        let e = one_error(|p| p.apps[0].tmpfs = vec![t("run")]);
        assert_eq!(e.field, "apps[0].tmpfs[0].path");
        let ok = parse(
            r#"{"hostname": "web-1", "apps": [{"name": "a", "rootfs": "/", "exec": ["x"],
                "capabilities": {"add": ["NET_ADMIN"], "drop": ["cap_net_raw"]}, "noNewPrivileges": true,
                "rlimits": [{"type": "nofile", "soft": 1024, "hard": 4096}], "oomScoreAdj": 500,
                "readOnlyRootFilesystem": true, "tmpfs": [{"path": "/run", "size": "8M", "mode": "0755"}],
                "restartPolicy": "on-failure", "maxRestarts": 3}]}"#,
        )
        .unwrap();
        assert_eq!(validate(&ok), vec![]);
    }

    #[test]
    fn resource_limits_are_checked() {
        let e = one_error(|p| p.apps[0].resources.memory_limit = Some(4096));
        assert_eq!(e.field, "apps[0].resources.memoryLimit");
        let e = one_error(|p| p.apps[0].resources.cpu_weight = Some(0));
        assert_eq!(e.field, "apps[0].resources.cpuWeight");
        let e = one_error(|p| p.apps[0].resources.pids_limit = Some(0));
        assert_eq!(e.field, "apps[0].resources.pidsLimit");
    }

    #[test]
    fn log_modes_and_buffer_sizes_are_checked() {
        let pod = parse(
            r#"{"apps": [{"name": "a", "rootfs": "/tmp", "exec": ["x"],
                          "logMode": "non-blocking", "logBufferSize": "4M"}]}"#,
        )
        .unwrap();
        assert_eq!(validate(&pod), vec![]);
        assert_eq!(pod.apps[0].log_mode, crate::manifest::LogMode::NonBlocking);
        assert_eq!(pod.apps[0].log_buffer_size, Some(4 << 20));
        // The bounds are inclusive.
        for ok in [64 << 10, 1 << 30] {
            assert_eq!(
                validate(&{
                    let mut p = good();
                    p.apps[0].log_buffer_size = Some(ok);
                    p
                }),
                vec![]
            );
        }
        for bad in [0, (64 << 10) - 1, (1 << 30) + 1] {
            let e = one_error(|p| p.apps[1].log_buffer_size = Some(bad));
            assert_eq!(e.field, "apps[1].logBufferSize");
            assert!(e.message.contains("outside 64K to 1G"), "{e}");
        }
        // A mode that is not one, a size that is not one, and the field
        // names in the manifest's style only.
        for (text, field) in [
            (r#""logMode": "drop""#, "apps[0].logMode"),
            (r#""logBufferSize": "4X""#, "apps[0].logBufferSize"),
            (r#""log_mode": "blocking""#, "apps[0].log_mode"),
            (r#""logmode": "blocking""#, "apps[0].logmode"),
        ] {
            let e = parse(&format!(
                r#"{{"apps": [{{"name": "a", "rootfs": "/", "exec": ["x"], {text}}}]}}"#
            ))
            .unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
        }
    }

    #[test]
    fn a_pod_needs_an_app_and_bounded_host_volumes() {
        let e = one_error(|p| p.apps.clear());
        assert_eq!(e.field, "apps");
        let mut pod = good();
        pod.apps[0].mount_points.clear();
        pod.volumes = (0..=MAX_HOST_VOLUMES)
            .map(|i| Volume {
                name: format!("v{i}"),
                kind: VolumeKind::Host,
                source: Some("/tmp".into()),
                read_only: None,
                mode: None,
                uid: None,
                gid: None,
                size: None,
            })
            .collect();
        let errs = validate(&pod);
        assert!(errs.iter().any(|e| e.field == "volumes"), "{errs:?}");
    }

    #[test]
    fn long_names_that_share_a_tag_are_refused() {
        // Two names whose hashed tags collide cannot be built by hand, but
        // a short name equal to a long name's derived tag can.
        let long = format!("{}-tail", "v".repeat(40));
        let mut pod = good();
        pod.apps[0].mount_points.clear();
        pod.volumes[0].name = long.clone();
        pod.volumes[1] = Volume {
            name: nine_p_tag(&long),
            kind: VolumeKind::Host,
            source: Some("/tmp".into()),
            read_only: None,
            mode: None,
            uid: None,
            gid: None,
            size: None,
        };
        let errs = validate(&pod);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("9p tag"));
    }

    #[test]
    fn parse_errors_name_the_field() {
        let e =
            parse(r#"{"apps": [{"name": "a", "rootfs": "/", "exec": ["x"], "readonly": true}]}"#)
                .unwrap_err();
        assert_eq!(e.field, "apps[0].readonly");
        assert!(e.message.contains("unknown field `readonly`"), "{e}");
        let e = parse(r#"{"volumes": [{"name": "a", "kind": "hots"}], "apps": []}"#).unwrap_err();
        assert_eq!(e.field, "volumes[0].kind");
        assert!(e.message.contains("unknown variant `hots`"), "{e}");
        let e =
            parse(r#"{"volumes": [{"name": "a", "kind": "empty", "mode": "999"}], "apps": []}"#)
                .unwrap_err();
        assert_eq!(e.field, "volumes[0].mode");
        let e = parse("{").unwrap_err();
        assert!(e.message.contains("EOF"), "{e}");
        let e = parse(r#"{"volumes": []}"#).unwrap_err();
        assert!(e.message.contains("missing field `apps`"), "{e}");
    }

    #[test]
    fn host_paths_resolve_against_the_manifest_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("data")).unwrap();
        fs::create_dir(dir.path().join("root")).unwrap();
        fs::write(dir.path().join("file"), b"x").unwrap();
        let mut pod = good();
        pod.volumes[0].source = Some("data".into());
        pod.apps[0].rootfs = "root".into();
        pod.apps[1].rootfs = "missing".into();
        let errs = resolve_host_paths(&mut pod, dir.path());
        let base = fs::canonicalize(dir.path()).unwrap();
        assert_eq!(pod.volumes[0].source.as_deref(), Some(&*base.join("data")));
        assert_eq!(pod.apps[0].rootfs, base.join("root"));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "apps[1].rootfs");
        assert!(errs[0].message.ends_with("missing does not exist"));

        pod.volumes[0].source = Some("file".into());
        let errs = resolve_host_paths(&mut pod, dir.path());
        assert!(errs
            .iter()
            .any(|e| e.field == "volumes[0].source" && e.message.contains("not a directory")));
    }

    #[test]
    fn load_reports_every_problem_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pod.json");
        let pod = PodManifest {
            hostname: None,
            volumes: vec![],
            apps: vec![App {
                name: "Bad".into(),
                rootfs: "nowhere".into(),
                mount_points: vec![MountPoint {
                    volume: "x".into(),
                    path: "rel".into(),
                    read_only: false,
                    sub_path: None,
                }],
                ..App::default()
            }],
            sandbox: false,
            network: Default::default(),
        };
        fs::write(&path, serde_json::to_string(&pod).unwrap()).unwrap();
        let msg = load(&path).unwrap_err().to_string();
        for needle in [
            "pod.json is invalid",
            "apps[0].name",
            "apps[0].exec",
            "apps[0].mountPoints[0].volume",
            "apps[0].mountPoints[0].path",
            "apps[0].rootfs",
        ] {
            assert!(msg.contains(needle), "{needle} missing from:\n{msg}");
        }
        let missing = load(&dir.path().join("nope.json")).unwrap_err().to_string();
        assert!(missing.contains("cannot read pod manifest"), "{missing}");
    }

    #[test]
    fn guest_paths_normalise() {
        assert_eq!(normalize_guest_path("/a//b/./c/").unwrap(), "/a/b/c");
        assert_eq!(normalize_guest_path("/").unwrap(), "/");
        assert!(normalize_guest_path("/a/../b").is_err());
        assert_eq!(
            normalize_guest_path("/a/../b").unwrap_err().to_string(),
            "\"/a/../b\" must not contain \"..\""
        );
        assert_eq!(
            normalize_guest_path("a").unwrap_err().to_string(),
            "\"a\" must be an absolute path"
        );
        assert_eq!(
            normalize_guest_path("/a\0").unwrap_err().to_string(),
            "contains a NUL character"
        );
    }
}
