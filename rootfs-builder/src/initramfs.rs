//! Assembles a pod's initramfs: the agent as `/init`, its settings, the
//! validated manifest, the kernel modules in load order and every app's
//! root under `/opt/stage2/<app>/rootfs`.

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use kvmpod_api::config::AgentConfig;
use kvmpod_api::layout;
use kvmpod_api::manifest::PodManifest;

use crate::archive::{Archive, ArchiveError, Data, Entry, Node};
use crate::modules::{ModuleError, ModuleIndex};
use crate::tree::{self, TreeError};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("agent binary {}: {source}", path.display())]
    Agent { path: PathBuf, source: io::Error },
    #[error("app {app:?}: root {}: {source}", rootfs.display())]
    AppRoot {
        app: String,
        rootfs: PathBuf,
        source: TreeError,
    },
    #[error(transparent)]
    Modules(#[from] ModuleError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("writing {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("modules directory {} has no kernel version in its name", .0.display())]
    NoKernelVersion(PathBuf),
}

/// The kernel modules to put in the initramfs.
#[derive(Debug, Clone)]
pub struct KernelModules {
    /// `/lib/modules/<kernel version>` of the guest kernel.
    pub dir: PathBuf,
    /// Modules the pod needs; their dependencies are added.
    pub wanted: Vec<String>,
}

/// Everything an initramfs is made of.
#[derive(Debug, Clone)]
pub struct InitramfsSpec {
    pub agent: PathBuf,
    pub manifest: PodManifest,
    /// The agent's settings; `modules` is filled in by [`build_archive`].
    pub config: AgentConfig,
    pub modules: Option<KernelModules>,
}

/// How the archive is compressed (the kernel unpacks either).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

/// Builds the archive in memory (file contents of app roots and the agent
/// are streamed from the host when written).
pub fn build_archive(spec: &InitramfsSpec) -> Result<Archive, BuildError> {
    let mut a = Archive::new();

    // The kernel opens /dev/console for init's stdio before init runs, so
    // the node must be in the archive; devtmpfs is mounted over /dev later.
    a.add("dev", Entry::dir(0o755))?;
    a.add("dev/console", Entry::console())?;
    for dir in [
        "proc",
        "sys",
        "run",
        "mnt",
        "etc/kvmpod",
        layout::STAGE2_DIR,
    ] {
        a.add(dir, Entry::dir(0o755))?;
    }
    a.add("tmp", Entry::dir(0o1777))?;

    let agent_len = fs::metadata(&spec.agent)
        .map_err(|source| BuildError::Agent {
            path: spec.agent.clone(),
            source,
        })?
        .len();
    a.add(
        layout::INIT,
        Entry {
            node: Node::File(Data::HostFile {
                path: spec.agent.clone(),
                len: agent_len,
            }),
            perm: 0o755,
            uid: 0,
            gid: 0,
        },
    )?;

    let mut config = spec.config.clone();
    config.modules.clear();
    if let Some(km) = &spec.modules {
        let kver = km
            .dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| BuildError::NoKernelVersion(km.dir.clone()))?;
        let index = ModuleIndex::load(&km.dir)?;
        for m in index.resolve(&km.wanted)? {
            let guest = format!("{}/{kver}/{}", layout::MODULES_DIR, m.guest_rel_path());
            a.add(&guest, Entry::file(index.read_module(&m)?, 0o644))?;
            config.modules.push(guest);
        }
    }

    a.add(layout::AGENT_CONFIG, Entry::file(to_json(&config), 0o644))?;
    a.add(
        layout::MANIFEST,
        Entry::file(to_json(&spec.manifest), 0o644),
    )?;

    for app in &spec.manifest.apps {
        let prefix = layout::app_rootfs(&app.name);
        let prefix = prefix.to_string_lossy();
        tree::add_root(&mut a, &app.rootfs, &prefix).map_err(|source| BuildError::AppRoot {
            app: app.name.clone(),
            rootfs: app.rootfs.clone(),
            source,
        })?;
    }
    Ok(a)
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain types to a Vec cannot fail.
    let mut out = serde_json::to_vec_pretty(value).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Writes `archive` to `path` (via a temporary file renamed into place, so a
/// reader never sees half an initramfs). Returns the file's size.
pub fn write_initramfs(
    archive: &Archive,
    path: &Path,
    compression: Compression,
) -> Result<u64, BuildError> {
    let werr = |source| BuildError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("partial");
    let file = File::create(&tmp).map_err(werr)?;
    let out = BufWriter::with_capacity(1 << 20, file);
    let result = (|| -> Result<File, BuildError> {
        let out = match compression {
            Compression::None => archive.write(out)?,
            Compression::Gzip => {
                // GzEncoder's header has no name and a zero mtime: the same
                // archive always compresses to the same bytes.
                let enc = flate2::write::GzEncoder::new(out, flate2::Compression::new(6));
                archive.write(enc)?.finish().map_err(werr)?
            }
        };
        out.into_inner().map_err(|e| werr(e.into_error()))
    })();
    let file = match result {
        Ok(f) => f,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    file.sync_all().map_err(werr)?;
    let len = file.metadata().map_err(werr)?.len();
    fs::rename(&tmp, path).map_err(werr)?;
    Ok(len)
}

/// Reads an initramfs written by [`write_initramfs`] (gzip or plain).
pub fn read_initramfs(path: &Path) -> io::Result<Vec<crate::archive::ReadEntry>> {
    let bytes = fs::read(path)?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        crate::archive::read_all(flate2::read::GzDecoder::new(&bytes[..]))
    } else {
        crate::archive::read_all(&bytes[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn fixture() -> (tempfile::TempDir, InitramfsSpec) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("agent"), b"\x7fELF agent").unwrap();
        fs::create_dir_all(d.join("root/bin")).unwrap();
        fs::write(d.join("root/bin/busybox"), b"busybox").unwrap();
        symlink("busybox", d.join("root/bin/sh")).unwrap();
        let mods = d.join("modules/6.1.0-test");
        fs::create_dir_all(mods.join("kernel")).unwrap();
        fs::write(mods.join("kernel/virtio_ring.ko"), b"ring").unwrap();
        fs::write(mods.join("kernel/virtio.ko"), b"virtio").unwrap();
        fs::write(
            mods.join("modules.dep"),
            "kernel/virtio.ko: kernel/virtio_ring.ko\nkernel/virtio_ring.ko:\n",
        )
        .unwrap();
        let manifest = kvmpod_api::validate::parse(&format!(
            r#"{{"apps": [{{"name": "web", "rootfs": "{}", "exec": ["/bin/sh"]}}]}}"#,
            d.join("root").display()
        ))
        .unwrap();
        let spec = InitramfsSpec {
            agent: d.join("agent"),
            manifest,
            config: AgentConfig::default(),
            modules: Some(KernelModules {
                dir: mods,
                wanted: vec!["virtio".into()],
            }),
        };
        (dir, spec)
    }

    #[test]
    fn initramfs_holds_agent_config_manifest_modules_and_roots() {
        let (dir, spec) = fixture();
        let out = dir.path().join("initramfs.img");
        write_initramfs(&build_archive(&spec).unwrap(), &out, Compression::Gzip).unwrap();
        let entries = read_initramfs(&out).unwrap();
        let get = |p: &str| {
            entries
                .iter()
                .find(|e| e.path == p)
                .unwrap_or_else(|| panic!("{p}"))
        };
        assert_eq!(get("init").data, b"\x7fELF agent");
        assert_eq!(get("init").mode, 0o100755);
        assert_eq!(get("dev/console").rdev, (5, 1));
        assert_eq!(get("tmp").mode, 0o41777);
        assert_eq!(get("opt/stage2/web/rootfs/bin/sh").data, b"busybox");
        assert_eq!(
            get("lib/modules/6.1.0-test/kernel/virtio.ko").data,
            b"virtio"
        );
        let config: AgentConfig =
            serde_json::from_slice(&get("etc/kvmpod/agent.json").data).unwrap();
        assert_eq!(
            config.modules,
            [
                "/lib/modules/6.1.0-test/kernel/virtio_ring.ko",
                "/lib/modules/6.1.0-test/kernel/virtio.ko"
            ]
        );
        let pod: PodManifest = serde_json::from_slice(&get("etc/kvmpod/pod.json").data).unwrap();
        assert_eq!(pod, spec.manifest);
    }

    #[test]
    fn same_inputs_give_the_same_bytes() {
        let (dir, spec) = fixture();
        let a = dir.path().join("a.img");
        let b = dir.path().join("b.img");
        write_initramfs(&build_archive(&spec).unwrap(), &a, Compression::Gzip).unwrap();
        write_initramfs(&build_archive(&spec).unwrap(), &b, Compression::Gzip).unwrap();
        assert_eq!(fs::read(a).unwrap(), fs::read(b).unwrap());
    }

    #[test]
    fn a_missing_agent_or_module_is_a_clear_error() {
        let (dir, mut spec) = fixture();
        spec.agent = dir.path().join("nope");
        let e = build_archive(&spec).unwrap_err().to_string();
        assert!(e.starts_with("agent binary") && e.contains("nope"), "{e}");
        let (_dir, mut spec) = fixture();
        spec.modules.as_mut().unwrap().wanted.push("9p".into());
        let e = build_archive(&spec).unwrap_err().to_string();
        assert!(e.contains("\"9p\" is neither in"), "{e}");
    }
}
