//! Kernel modules a pod needs: the closure over `modules.dep`, in load order.
//!
//! Distribution kernels build virtio, 9p and vsock as modules. The agent
//! cannot run `modprobe`, so the host works out what to load and in which
//! order (dependencies first) and copies only those files, decompressed,
//! into the initramfs.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;

use crate::compression::Codec;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}:{line}: malformed line (expected \"<module path>: <dependency paths>\")", path.display())]
    Malformed { path: PathBuf, line: usize },
    #[error("kernel module {name:?} is neither in {} nor built into the kernel (modules.builtin)", dep_file.display())]
    NotFound { name: String, dep_file: PathBuf },
    #[error("kernel modules depend on each other in a cycle: {0}")]
    Cycle(String),
    #[error("cannot decompress {}: {why}", path.display())]
    Decompress { path: PathBuf, why: String },
}

/// A module to load, with its path relative to the modules directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    /// As listed in `modules.dep`, e.g. `kernel/net/9p/9p.ko.xz`.
    pub rel_path: String,
}

impl Module {
    /// The path the module gets in the initramfs, without any compression
    /// suffix (it is stored decompressed).
    pub fn guest_rel_path(&self) -> &str {
        strip_compression(&self.rel_path).0
    }
}

/// A kernel's module index: `modules.dep`, `modules.builtin` and the `pre:`
/// soft dependencies of `modules.softdep`.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    dir: PathBuf,
    /// name -> (path, hard dependencies by name, in file order)
    deps: HashMap<String, (String, Vec<String>)>,
    builtin: HashSet<String>,
    soft_pre: HashMap<String, Vec<String>>,
}

impl ModuleIndex {
    /// Reads the index of the modules directory `dir`
    /// (`/lib/modules/<kernel version>`).
    pub fn load(dir: &Path) -> Result<Self, ModuleError> {
        let read = |name: &str, required: bool| -> Result<String, ModuleError> {
            let path = dir.join(name);
            match fs::read_to_string(&path) {
                Ok(t) => Ok(t),
                Err(e) if !required && e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
                Err(source) => Err(ModuleError::Read { path, source }),
            }
        };
        let dep = read("modules.dep", true)?;
        let builtin = read("modules.builtin", false)?;
        let softdep = read("modules.softdep", false)?;
        Self::parse(dir, &dep, &builtin, &softdep)
    }

    /// Builds the index from the files' texts (`dir` is used in messages and
    /// to find module files later).
    pub fn parse(dir: &Path, dep: &str, builtin: &str, softdep: &str) -> Result<Self, ModuleError> {
        let dep_file = dir.join("modules.dep");
        let mut deps = HashMap::new();
        for (i, line) in dep.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (module, rest) = line.split_once(':').ok_or_else(|| ModuleError::Malformed {
                path: dep_file.clone(),
                line: i + 1,
            })?;
            let module = module.trim();
            if module.is_empty() {
                return Err(ModuleError::Malformed {
                    path: dep_file.clone(),
                    line: i + 1,
                });
            }
            let needs = rest.split_whitespace().map(module_name).collect();
            deps.insert(module_name(module), (module.to_string(), needs));
        }
        let builtin = builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        let mut soft_pre: HashMap<String, Vec<String>> = HashMap::new();
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(module) = words.next() else { continue };
            let mut in_pre = false;
            for w in words {
                match w {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    m if in_pre => soft_pre
                        .entry(normalize(module))
                        .or_default()
                        .push(normalize(m)),
                    _ => {}
                }
            }
        }
        Ok(ModuleIndex {
            dir: dir.to_path_buf(),
            deps,
            builtin,
            soft_pre,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `name` is built into the kernel (nothing to load).
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// The modules to load for `wanted`, dependencies first. Built-in
    /// modules are left out; an unknown module is an error. The order is
    /// deterministic: it follows `wanted` and the order of `modules.dep`.
    pub fn resolve<S: AsRef<str>>(&self, wanted: &[S]) -> Result<Vec<Module>, ModuleError> {
        let mut order = Vec::new();
        let mut done = HashSet::new();
        let mut path = Vec::new();
        for w in wanted {
            self.visit(
                &normalize(w.as_ref()),
                true,
                &mut order,
                &mut done,
                &mut path,
            )?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        required: bool,
        order: &mut Vec<Module>,
        done: &mut HashSet<String>,
        path: &mut Vec<String>,
    ) -> Result<(), ModuleError> {
        if done.contains(name) || self.builtin.contains(name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            path.push(name.to_string());
            return Err(ModuleError::Cycle(path.join(" -> ")));
        }
        let Some((rel_path, needs)) = self.deps.get(name) else {
            if required {
                return Err(ModuleError::NotFound {
                    name: name.to_string(),
                    dep_file: self.dir.join("modules.dep"),
                });
            }
            return Ok(());
        };
        path.push(name.to_string());
        // Soft `pre:` dependencies are wanted but not required: modprobe
        // also goes on without them.
        for pre in self.soft_pre.get(name).into_iter().flatten() {
            self.visit(pre, false, order, done, path)?;
        }
        for dep in needs {
            self.visit(dep, true, order, done, path)?;
        }
        path.pop();
        done.insert(name.to_string());
        order.push(Module {
            name: name.to_string(),
            rel_path: rel_path.clone(),
        });
        Ok(())
    }

    /// The module file's contents, decompressed (`.ko.xz`, `.ko.zst` and
    /// `.ko.gz` are supported) so the initramfs compresses it once and the
    /// guest kernel needs no module decompression support.
    pub fn read_module(&self, module: &Module) -> Result<Vec<u8>, ModuleError> {
        let path = self.dir.join(&module.rel_path);
        let raw = fs::read(&path).map_err(|source| ModuleError::Read {
            path: path.clone(),
            source,
        })?;
        match strip_compression(&module.rel_path).1 {
            None => Ok(raw),
            Some(codec) => codec.decompress(&raw).map_err(|e| ModuleError::Decompress {
                path,
                why: e.to_string(),
            }),
        }
    }
}

/// Splits a compression suffix off a module path.
fn strip_compression(path: &str) -> (&str, Option<Codec>) {
    for (suffix, codec) in [
        (".xz", Codec::Xz),
        (".zst", Codec::Zstd),
        (".gz", Codec::Gzip),
    ] {
        if let Some(stem) = path.strip_suffix(suffix) {
            return (stem, Some(codec));
        }
    }
    (path, None)
}

/// `kernel/net/9p/9pnet_virtio.ko.xz` -> `9pnet_virtio`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = strip_compression(file).0;
    normalize(stem.strip_suffix(".ko").unwrap_or(stem))
}

/// The kernel treats `-` and `_` in module names alike.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped like Debian 6.1's modules.dep for what a pod needs.
    const DEP: &str = "\
kernel/fs/netfs/netfs.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/vmw_vsock/vsock.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/crypto/crc32c_generic.ko:
kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
";

    fn index(builtin: &str) -> ModuleIndex {
        ModuleIndex::parse(
            Path::new("/lib/modules/6.1.0"),
            DEP,
            builtin,
            "softdep ext4 pre: crc32c post: nothing\n",
        )
        .unwrap()
    }

    fn names(mods: &[Module]) -> Vec<&str> {
        mods.iter().map(|m| m.name.as_str()).collect()
    }

    /// Every module comes after all of its dependencies.
    fn assert_dependency_first(idx: &ModuleIndex, mods: &[Module]) {
        for (i, m) in mods.iter().enumerate() {
            for dep in &idx.deps[&m.name].1 {
                let at = mods.iter().position(|x| &x.name == dep);
                if let Some(at) = at {
                    assert!(at < i, "{dep} must load before {}", m.name);
                }
            }
        }
    }

    #[test]
    fn closure_in_dependency_first_order() {
        let idx = index("");
        let mods = idx
            .resolve(&[
                "virtio_pci",
                "9pnet_virtio",
                "9p",
                "vmw_vsock_virtio_transport",
            ])
            .unwrap();
        assert_eq!(
            names(&mods),
            [
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
                "virtio_ring",
                "virtio",
                "virtio_pci",
                "9pnet",
                "9pnet_virtio",
                "netfs",
                "fscache",
                "9p",
                "vsock",
                "vmw_vsock_virtio_transport_common",
                "vmw_vsock_virtio_transport",
            ]
        );
        assert_dependency_first(&idx, &mods);
        // virtio_ring must precede virtio (verified by hand on Debian 6.1).
        let pos = |n| mods.iter().position(|m| m.name == n).unwrap();
        assert!(pos("virtio_ring") < pos("virtio"));
    }

    #[test]
    fn builtin_modules_are_skipped_and_names_normalise() {
        let idx = index("kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n");
        let mods = idx.resolve(&["9pnet-virtio"]).unwrap();
        assert_eq!(names(&mods), ["9pnet", "9pnet_virtio"]);
        assert!(idx.is_builtin("virtio"));
        // A module that is wholly built in resolves to nothing to load.
        assert!(idx.resolve(&["virtio"]).unwrap().is_empty());
    }

    #[test]
    fn soft_pre_dependencies_load_first_when_present() {
        let idx = index("");
        let mods = idx.resolve(&["ext4"]).unwrap();
        // crc32c is not in this modules.dep: a soft dependency may be absent.
        assert_eq!(names(&mods), ["jbd2", "ext4"]);
        assert_eq!(mods[1].guest_rel_path(), "kernel/fs/ext4/ext4.ko");
    }

    #[test]
    fn unknown_module_and_cycles_are_errors() {
        let idx = index("");
        let e = idx.resolve(&["nosuch"]).unwrap_err().to_string();
        assert!(
            e.contains("\"nosuch\" is neither in /lib/modules/6.1.0/modules.dep"),
            "{e}"
        );
        let cyclic =
            ModuleIndex::parse(Path::new("/m"), "a.ko: b.ko\nb.ko: a.ko\n", "", "").unwrap();
        let e = cyclic.resolve(&["a"]).unwrap_err().to_string();
        assert!(e.contains("a -> b -> a"), "{e}");
        let bad = ModuleIndex::parse(Path::new("/m"), "no colon here\n", "", "");
        assert!(matches!(bad, Err(ModuleError::Malformed { line: 1, .. })));
    }

    #[test]
    fn compressed_modules_are_stored_decompressed() {
        let dir = tempfile::tempdir().unwrap();
        let payload = b"\x7fELF pretend module".repeat(50);
        let xz = crate::compression::tests::compress(Codec::Xz, &payload);
        let zst = crate::compression::tests::compress(Codec::Zstd, &payload);
        let gz = crate::compression::tests::compress(Codec::Gzip, &payload);
        fs::write(dir.path().join("a.ko.xz"), &xz).unwrap();
        fs::write(dir.path().join("b.ko.zst"), &zst).unwrap();
        fs::write(dir.path().join("c.ko.gz"), &gz).unwrap();
        fs::write(dir.path().join("d.ko"), &payload).unwrap();
        fs::write(
            dir.path().join("modules.dep"),
            "a.ko.xz:\nb.ko.zst: a.ko.xz\nc.ko.gz:\nd.ko:\n",
        )
        .unwrap();
        let idx = ModuleIndex::load(dir.path()).unwrap();
        let mods = idx.resolve(&["b", "c", "d"]).unwrap();
        assert_eq!(names(&mods), ["a", "b", "c", "d"]);
        for m in &mods {
            assert_eq!(idx.read_module(m).unwrap(), payload, "{}", m.rel_path);
            assert!(m.guest_rel_path().ends_with(".ko"));
        }
        fs::write(dir.path().join("a.ko.xz"), b"not xz").unwrap();
        let e = idx.read_module(&mods[0]).unwrap_err().to_string();
        assert!(e.contains("cannot decompress"), "{e}");
    }
}
