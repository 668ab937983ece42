//! Assembles kvmpod's stage1 guest image: an initramfs with the agent as
//! `/init`, the kernel modules every VM of a kind needs (in load order, for
//! each virtio transport) and the list of them. Nothing in it is per pod:
//! a pod's settings, manifest and app roots come through its own share, so
//! one image serves every pod of an agent build and kernel.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use kvmpod_api::config::Stage1Config;
use kvmpod_api::layout::{self, NET_MODULES_KEY};

use crate::archive::{Archive, ArchiveError, Data, Entry, Node};
use crate::modules::{ModuleError, ModuleIndex};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("agent binary {}: {source}", path.display())]
    Agent { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Modules(#[from] ModuleError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("writing {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("modules directory {} has no kernel version in its name", .0.display())]
    NoKernelVersion(PathBuf),
}

/// The kernel modules to put in the image.
#[derive(Debug, Clone)]
pub struct KernelModules {
    /// `/lib/modules/<kernel version>` of the guest kernel.
    pub dir: PathBuf,
    /// For each virtio transport module, the modules a VM with it needs
    /// (the transport's own included); their dependencies are added.
    pub wanted: BTreeMap<String, Vec<String>>,
}

/// The virtio transports a kvmpod VM may have: QEMU's microvm has
/// virtio-mmio, q35 and lkvm virtio-pci.
pub const TRANSPORTS: [&str; 2] = ["virtio_mmio", "virtio_pci"];

/// What every pod's guest needs besides its transport: vsock to the host,
/// 9p for the pod's share and host volumes, overlayfs for app roots.
const POD_MODULES: [&str; 4] = [
    "vmw_vsock_virtio_transport",
    "9pnet_virtio",
    "9p",
    "overlay",
];

/// The modules of a kvmpod stage1 image, for each transport, and the
/// network interface's driver (under [`NET_MODULES_KEY`]), which only pods
/// with a network load.
pub fn pod_modules() -> BTreeMap<String, Vec<String>> {
    let mut all: BTreeMap<String, Vec<String>> = TRANSPORTS
        .iter()
        .map(|t| {
            let mut m = vec![t.to_string()];
            m.extend(POD_MODULES.iter().map(|p| p.to_string()));
            (t.to_string(), m)
        })
        .collect();
    all.insert(NET_MODULES_KEY.to_string(), vec!["virtio_net".to_string()]);
    all
}

/// Everything a stage1 image is made of.
#[derive(Debug, Clone)]
pub struct InitramfsSpec {
    pub agent: PathBuf,
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
    for dir in ["proc", "sys", "run", "mnt", "etc/kvmpod"] {
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

    let mut config = Stage1Config::default();
    if let Some(km) = &spec.modules {
        add_modules(&mut a, km, &mut config)?;
    }
    a.add(layout::STAGE1_CONFIG, Entry::file(to_json(&config), 0o644))?;
    Ok(a)
}

/// Adds each transport's modules (each file once) and lists them in
/// `config`, dependencies first.
fn add_modules(
    a: &mut Archive,
    km: &KernelModules,
    config: &mut Stage1Config,
) -> Result<(), BuildError> {
    let kver = km
        .dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| BuildError::NoKernelVersion(km.dir.clone()))?;
    config.kernel = kver.to_string();
    let index = ModuleIndex::load(&km.dir)?;
    for (transport, wanted) in &km.wanted {
        let mut order = Vec::new();
        for m in index.resolve(wanted)? {
            let guest = format!("{}/{kver}/{}", layout::MODULES_DIR, m.guest_rel_path());
            if a.get(&guest).is_none() {
                a.add(&guest, Entry::file(index.read_module(&m)?, 0o644))?;
            }
            order.push(guest);
        }
        config.modules.insert(transport.clone(), order);
    }
    Ok(())
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

    fn fixture() -> (tempfile::TempDir, InitramfsSpec) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("agent"), b"\x7fELF agent").unwrap();
        let mods = d.join("modules/6.1.0-test");
        fs::create_dir_all(mods.join("kernel")).unwrap();
        for m in ["virtio_ring", "virtio", "virtio_mmio", "virtio_pci"] {
            fs::write(mods.join(format!("kernel/{m}.ko")), m).unwrap();
        }
        fs::write(
            mods.join("modules.dep"),
            "kernel/virtio.ko: kernel/virtio_ring.ko\nkernel/virtio_ring.ko:\n\
             kernel/virtio_mmio.ko: kernel/virtio.ko kernel/virtio_ring.ko\n\
             kernel/virtio_pci.ko: kernel/virtio.ko kernel/virtio_ring.ko\n",
        )
        .unwrap();
        let wanted = [("virtio_mmio", "virtio_mmio"), ("virtio_pci", "virtio_pci")]
            .into_iter()
            .map(|(t, m)| (t.to_string(), vec![m.to_string()]))
            .collect();
        let spec = InitramfsSpec {
            agent: d.join("agent"),
            modules: Some(KernelModules { dir: mods, wanted }),
        };
        (dir, spec)
    }

    #[test]
    fn stage1_holds_the_agent_and_each_transports_modules_once() {
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
        assert_eq!(
            get("lib/modules/6.1.0-test/kernel/virtio.ko").data,
            b"virtio"
        );
        let shared = entries
            .iter()
            .filter(|e| e.path.ends_with("/virtio_ring.ko"))
            .count();
        assert_eq!(shared, 1, "a module both transports need is stored once");
        let config: Stage1Config =
            serde_json::from_slice(&get("etc/kvmpod/stage1.json").data).unwrap();
        assert_eq!(config.kernel, "6.1.0-test");
        assert_eq!(
            config.modules["virtio_pci"],
            [
                "/lib/modules/6.1.0-test/kernel/virtio_ring.ko",
                "/lib/modules/6.1.0-test/kernel/virtio.ko",
                "/lib/modules/6.1.0-test/kernel/virtio_pci.ko"
            ]
        );
        assert!(config.modules["virtio_mmio"][2].ends_with("virtio_mmio.ko"));
        assert!(
            !entries.iter().any(|e| e.path.starts_with("opt/")),
            "no app root is in the stage1 image"
        );
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
        let km = spec.modules.as_mut().unwrap();
        km.wanted.get_mut("virtio_pci").unwrap().push("9p".into());
        let e = build_archive(&spec).unwrap_err().to_string();
        assert!(e.contains("\"9p\" is neither in"), "{e}");
    }
}
