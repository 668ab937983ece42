//! `host-ctl run IMAGE [COMMAND...]`, docker and podman's common case: a
//! pod of one app whose root is an image, written as the manifest a user
//! would have written, so everything after it (validation, defaults from
//! the image, the VM) is the manifest path's.

use std::path::PathBuf;

use kvmpod_api::manifest::{App, EnvVar, MountPoint, PodManifest, Volume, VolumeKind};

use super::LaunchError;

/// What the command line asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageRun {
    /// The image (a name or digest in the image store).
    pub image: String,
    /// Replaces the image's Cmd (its Entrypoint stays).
    pub command: Vec<String>,
    /// Replaces the image's Entrypoint (and drops its Cmd).
    pub entrypoint: Option<String>,
    /// `-e K=V` (or `-e K`: the host's value).
    pub env: Vec<String>,
    /// `-v HOSTDIR:PATH[:ro]`.
    pub volumes: Vec<String>,
    pub workdir: Option<String>,
    /// `-u USER[:GROUP]`.
    pub user: Option<String>,
    /// The pod's hostname (its name, if it has one).
    pub hostname: Option<String>,
    /// `-i`: the app reads a stdin that `run` (or `attach`) feeds.
    pub stdin: bool,
    /// `-t`: the app runs on a terminal of its own.
    pub terminal: bool,
}

impl ImageRun {
    /// The pod's manifest.
    pub fn manifest(&self) -> Result<PodManifest, LaunchError> {
        let mut volumes = Vec::new();
        let mut mount_points = Vec::new();
        for (i, spec) in self.volumes.iter().enumerate() {
            let (volume, mp) = volume(i, spec)?;
            volumes.push(volume);
            mount_points.push(mp);
        }
        let (user, group) = match self.user.as_deref().map(|u| u.split_once(':')) {
            Some(Some((u, g))) => (Some(u.to_string()), Some(g.to_string())),
            Some(None) => (self.user.clone(), None),
            None => (None, None),
        };
        let app = App {
            name: app_name(&self.image),
            image: Some(self.image.clone()),
            exec: self.entrypoint.iter().cloned().collect(),
            args: self.command.clone(),
            env: self.environment(),
            user,
            group,
            working_directory: self.workdir.clone(),
            mount_points,
            stdin: self.stdin,
            terminal: self.terminal,
            ..App::default()
        };
        Ok(PodManifest {
            hostname: self.hostname.clone(),
            volumes,
            apps: vec![app],
            sandbox: false,
            network: Default::default(),
        })
    }
}

impl ImageRun {
    fn environment(&self) -> Vec<EnvVar> {
        env_vars(&self.env, self.terminal)
    }
}

/// `-e` as given; on a terminal, the host's `TERM` too unless `-e` sets
/// it, as `docker run -t` and `docker exec -t` do (the agent gives any
/// process on a terminal xterm when it still has none).
pub fn env_vars(given: &[String], terminal: bool) -> Vec<EnvVar> {
    let mut env: Vec<EnvVar> = given.iter().map(|e| env_var(e)).collect();
    if terminal && !env.iter().any(|v| v.name == "TERM") {
        if let Some(term) = std::env::var("TERM").ok().filter(|t| !t.is_empty()) {
            env.push(EnvVar {
                name: "TERM".into(),
                value: term,
            });
        }
    }
    env
}

/// `K=V`, or `K` alone for the host's value of K (empty if unset): what
/// `-e` means to `run` and `exec`.
pub fn env_var(spec: &str) -> EnvVar {
    match spec.split_once('=') {
        Some((k, v)) => EnvVar {
            name: k.into(),
            value: v.into(),
        },
        None => EnvVar {
            name: spec.into(),
            value: std::env::var(spec).unwrap_or_default(),
        },
    }
}

/// `-v HOSTDIR:PATH[:ro|:rw]` as host volume `v<i>` mounted at PATH.
fn volume(i: usize, spec: &str) -> Result<(Volume, MountPoint), LaunchError> {
    let bad = |why: &str| LaunchError::Host(format!("-v {spec:?}: {why} (HOSTDIR:PATH[:ro])"));
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, path, read_only) = match parts.as_slice() {
        [h, p] => (*h, *p, false),
        [h, p, "ro"] => (*h, *p, true),
        [h, p, "rw"] => (*h, *p, false),
        [_, _, other] => return Err(bad(&format!("unknown option {other:?}"))),
        _ => return Err(bad("expected a host directory and a path in the app")),
    };
    let source =
        std::fs::canonicalize(host).map_err(|e| bad(&format!("host directory {host}: {e}")))?;
    if !source.is_dir() {
        return Err(bad(&format!("{} is not a directory", source.display())));
    }
    let name = format!("v{i}");
    let volume = Volume {
        name: name.clone(),
        kind: VolumeKind::Host,
        source: Some(source),
        read_only: None,
        mode: None,
        uid: None,
        gid: None,
        size: None,
    };
    let mp = MountPoint {
        volume: name,
        path: path.to_string(),
        read_only,
        sub_path: None,
    };
    Ok((volume, mp))
}

/// An app name (lowercase letters, digits, single dashes) from the image's
/// repository: `quay.io/org/my_app:1.0` gives `my-app`.
pub fn app_name(image: &str) -> String {
    let repo = image.split('@').next().unwrap_or(image);
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let last = last.split(':').next().unwrap_or(last);
    let mut name = String::new();
    for c in last.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name.trim_end_matches('-');
    let name: String = name.chars().take(63).collect();
    let name = name.trim_end_matches('-');
    if name.is_empty() {
        "app".to_string()
    } else {
        name.to_string()
    }
}

/// What `host-ctl run TARGET` names: a manifest file or an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodSource {
    Manifest(PathBuf),
    Image(ImageRun),
    /// No pod yet: a VM booted for the warm pool.
    PoolMember,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_come_from_the_repository() {
        assert_eq!(app_name("busybox"), "busybox");
        assert_eq!(app_name("quay.io/org/My_App:1.0"), "my-app");
        assert_eq!(app_name("127.0.0.1:5000/kvmpod/test:1"), "test");
        assert_eq!(app_name("x@sha256:abcd"), "x");
        assert_eq!(app_name("sha256:abcd"), "sha256");
        assert_eq!(app_name("___"), "app");
    }

    #[test]
    fn flags_become_a_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let run = ImageRun {
            image: "busybox:latest".into(),
            command: vec!["echo".into(), "hi".into()],
            env: vec!["A=1".into(), "KVMPOD_SURELY_UNSET".into()],
            volumes: vec![format!("{}:/data:ro", dir.path().display())],
            workdir: Some("/data".into()),
            user: Some("1000:100".into()),
            ..ImageRun::default()
        };
        let m = run.manifest().unwrap();
        let app = &m.apps[0];
        assert_eq!(app.name, "busybox");
        assert_eq!(app.image.as_deref(), Some("busybox:latest"));
        assert!(app.exec.is_empty());
        assert_eq!(app.args, ["echo", "hi"]);
        assert_eq!(app.env[1].value, "");
        assert_eq!(
            (app.user.as_deref(), app.group.as_deref()),
            (Some("1000"), Some("100"))
        );
        assert!(app.mount_points[0].read_only);
        assert_eq!(
            m.volumes[0].source.as_deref(),
            Some(dir.path().canonicalize().unwrap().as_path())
        );
        assert!(
            kvmpod_api::validate::validate(&m).is_empty(),
            "{:?}",
            kvmpod_api::validate::validate(&m)
        );
    }

    #[test]
    fn bad_volume_flags_are_named() {
        for spec in ["/nope-kvmpod:/x", "/tmp", "/tmp:/x:rx"] {
            let run = ImageRun {
                image: "x".into(),
                volumes: vec![spec.into()],
                ..ImageRun::default()
            };
            let e = run.manifest().unwrap_err().to_string();
            assert!(e.contains(spec), "{e}");
        }
    }
}
