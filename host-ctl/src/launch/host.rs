//! Finding what every pod needs on the host whatever its hypervisor: the
//! agent binary and the guest kernel. A missing piece is reported with the
//! fix.

use std::env;
use std::path::{Path, PathBuf};

use super::LaunchError;

type Result<T> = std::result::Result<T, LaunchError>;

macro_rules! bail {
    ($($t:tt)*) => {
        return Err(LaunchError::Host(format!($($t)*)))
    };
}

use crate::vmm::{elf_interpreter, DEPS_HINT};

/// The agent: `--agent`, `KVMPOD_AGENT`, next to host-ctl, or where the
/// workspace build puts it (`target/x86_64-unknown-linux-musl/agent/`).
pub fn agent(flag: Option<&Path>) -> Result<PathBuf> {
    let chosen = |p: PathBuf, from: &str| -> Result<PathBuf> {
        if !p.is_file() {
            bail!("{from} {}: no such file", p.display());
        }
        check_static(&p)?;
        Ok(p)
    };
    if let Some(p) = flag {
        return chosen(p.to_path_buf(), "--agent");
    }
    if let Some(p) = env::var_os("KVMPOD_AGENT") {
        return chosen(PathBuf::from(p), "KVMPOD_AGENT=");
    }
    // Next to host-ctl only when installed; in a build tree the sibling
    // target/<profile>/kvmpod-agent is a host (glibc) build, so the musl
    // build comes first.
    let exe = env::current_exe().ok();
    let dir = exe.as_deref().and_then(Path::parent);
    let mut candidates = Vec::new();
    if let Some(dir) = dir {
        if let Some(target) = dir.parent() {
            candidates.push(target.join("x86_64-unknown-linux-musl/agent/kvmpod-agent"));
        }
        candidates.push(dir.join("kvmpod-agent"));
    }
    candidates.push("/usr/local/lib/kvmpod/kvmpod-agent".into());
    candidates.push("/usr/lib/kvmpod/kvmpod-agent".into());
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => chosen(p.clone(), "agent"),
        None => bail!(
            "the guest agent (kvmpod-agent) was not found (looked in {}); build it with `make build`",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The agent runs as PID 1 of a guest with no C library or loader: it must
/// be a static executable (an ELF without a `PT_INTERP` program header).
pub fn check_static(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path)
        .map_err(|e| LaunchError::Host(format!("reading {}: {e}", path.display())))?;
    match elf_interpreter(&bytes) {
        Ok(false) => Ok(()),
        Ok(true) => bail!(
            "{} is dynamically linked, but the guest has no C library; use the static musl build (`make build`)",
            path.display()
        ),
        Err(why) => bail!("{} is not a usable agent binary: {why}", path.display()),
    }
}

/// The guest kernel and its modules directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub image: PathBuf,
    /// `/lib/modules/<version>`, when the kernel has one (a kernel with
    /// everything built in needs none).
    pub modules: Option<PathBuf>,
}

/// `--kernel` and `--modules-dir`, or the newest `/boot/vmlinuz-<version>`
/// with its `/lib/modules/<version>`.
pub fn kernel(image: Option<&Path>, modules: Option<&Path>) -> Result<Kernel> {
    kernel_in(
        Path::new("/boot"),
        Path::new("/lib/modules"),
        image,
        modules,
    )
}

fn kernel_in(
    boot: &Path,
    lib_modules: &Path,
    image: Option<&Path>,
    modules: Option<&Path>,
) -> Result<Kernel> {
    let image = match image {
        Some(p) if p.is_file() => p.to_path_buf(),
        Some(p) => bail!("--kernel {}: no such file", p.display()),
        None => newest_kernel(boot).ok_or_else(|| {
            LaunchError::Host(format!(
                "no guest kernel found ({}/vmlinuz-*); {DEPS_HINT} (it installs linux-image-amd64), or pass --kernel",
                boot.display()
            ))
        })?,
    };
    let modules = match modules {
        Some(m) if m.join("modules.dep").is_file() => Some(m.to_path_buf()),
        Some(m) => bail!("--modules-dir {}: it has no modules.dep", m.display()),
        None => image
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .map(|v| lib_modules.join(v))
            .filter(|d| d.join("modules.dep").is_file()),
    };
    Ok(Kernel { image, modules })
}

fn newest_kernel(boot: &Path) -> Option<PathBuf> {
    let mut found: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(boot)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name.strip_prefix("vmlinuz-")?.to_string();
            Some((version_key(&version), e.path()))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

/// "6.1.0-56-amd64" -> [6, 1, 0, 56]: numbers compare as numbers.
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn static_and_dynamic_elves_are_told_apart() {
        // This test binary is dynamically linked (glibc).
        let me = std::env::current_exe().unwrap();
        let e = check_static(&me).unwrap_err().to_string();
        assert!(e.contains("dynamically linked"), "{e}");
        assert_eq!(elf_interpreter(b"#!/bin/sh\n"), Err("not an ELF file"));
        assert_eq!(elf_interpreter(b"\x7fELF\x02\x01"), Err("truncated header"));
    }

    #[test]
    fn newest_kernel_and_its_modules_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot");
        let lib = dir.path().join("lib");
        fs::create_dir_all(&boot).unwrap();
        for v in ["6.1.0-9-amd64", "6.1.0-56-amd64", "5.10.0-30-amd64"] {
            fs::write(boot.join(format!("vmlinuz-{v}")), "").unwrap();
        }
        fs::create_dir_all(lib.join("6.1.0-56-amd64")).unwrap();
        fs::write(lib.join("6.1.0-56-amd64/modules.dep"), "").unwrap();
        let k = kernel_in(&boot, &lib, None, None).unwrap();
        assert_eq!(k.image, boot.join("vmlinuz-6.1.0-56-amd64"));
        assert_eq!(k.modules, Some(lib.join("6.1.0-56-amd64")));

        let custom = dir.path().join("bzImage");
        fs::write(&custom, "").unwrap();
        let k = kernel_in(&boot, &lib, Some(&custom), None).unwrap();
        assert_eq!(k.modules, None);

        let empty = dir.path().join("empty");
        fs::create_dir_all(&empty).unwrap();
        let e = kernel_in(&empty, &lib, None, None).unwrap_err().to_string();
        assert!(e.contains("make deps"), "{e}");
    }
}
