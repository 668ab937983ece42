//! The kernel image QEMU boots. Where the guest kernel has a PVH entry,
//! QEMU boots its uncompressed ELF directly: under TCG the bzImage's
//! self-decompression is most of the boot (about half of Debian's). The ELF
//! is extracted once per kernel and cached in the state directory.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rootfs_builder::kernel::{extract_vmlinux, has_pvh_entry};

/// The image to pass to `-kernel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootKernel {
    pub path: PathBuf,
    /// Booted through its PVH entry (an uncompressed ELF).
    pub pvh: bool,
}

/// The fastest image to boot `kernel` from: a cached PVH ELF when one can
/// be had, else the kernel as it is (with a note saying why).
pub fn boot_kernel(kernel: &Path, cache_dir: &Path) -> BootKernel {
    match pvh_image(kernel, cache_dir) {
        Ok(Some(path)) => BootKernel { path, pvh: true },
        Ok(None) => BootKernel {
            path: kernel.to_path_buf(),
            pvh: false,
        },
        Err(e) => {
            eprintln!(
                "host-ctl: note: booting {} as a bzImage: {e:#}",
                kernel.display()
            );
            BootKernel {
                path: kernel.to_path_buf(),
                pvh: false,
            }
        }
    }
}

/// The cached ELF for `kernel`, extracting it on first use; None when the
/// kernel has no PVH entry.
fn pvh_image(kernel: &Path, cache_dir: &Path) -> Result<Option<PathBuf>> {
    let meta = fs::metadata(kernel).with_context(|| format!("reading {}", kernel.display()))?;
    let mut h = DefaultHasher::new();
    fs::canonicalize(kernel)?.hash(&mut h);
    (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ino()).hash(&mut h);
    let key = format!("{:016x}", h.finish());
    let elf_path = cache_dir.join(format!("vmlinux-{key}"));
    let no_pvh = cache_dir.join(format!("vmlinux-{key}.no-pvh"));
    if elf_path.is_file() {
        return Ok(Some(elf_path));
    }
    if no_pvh.exists() {
        return Ok(None);
    }

    let bytes = fs::read(kernel).with_context(|| format!("reading {}", kernel.display()))?;
    if bytes.starts_with(b"\x7fELF") {
        // Already an ELF: boot it as it is if it can be.
        return Ok(has_pvh_entry(&bytes).then(|| kernel.to_path_buf()));
    }
    let elf = extract_vmlinux(&bytes).context("extracting the uncompressed kernel")?;
    fs::create_dir_all(cache_dir).with_context(|| format!("creating {}", cache_dir.display()))?;
    if !has_pvh_entry(&elf) {
        fs::write(&no_pvh, b"")?;
        return Ok(None);
    }
    // Written under a unique name and renamed: concurrent runs never see
    // half a file.
    let tmp = cache_dir.join(format!(".vmlinux-{key}.{}", std::process::id()));
    fs::write(&tmp, &elf).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &elf_path).with_context(|| format!("writing {}", elf_path.display()))?;
    Ok(Some(elf_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_that_cannot_be_extracted_boots_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("bzImage");
        fs::write(&k, b"not a kernel").unwrap();
        let b = boot_kernel(&k, &dir.path().join("cache"));
        assert_eq!(
            b,
            BootKernel {
                path: k,
                pvh: false
            }
        );
    }

    #[test]
    fn the_installed_kernel_is_extracted_once_and_cached() {
        let Ok(k) = crate::tools::kernel(None, None) else {
            return; // no kernel here; the boot tests require one
        };
        let dir = tempfile::tempdir().unwrap();
        let first = boot_kernel(&k.image, dir.path());
        assert!(first.pvh, "{first:?}");
        let mtime = fs::metadata(&first.path).unwrap().modified().unwrap();
        let again = boot_kernel(&k.image, dir.path());
        assert_eq!(first, again);
        assert_eq!(
            fs::metadata(&again.path).unwrap().modified().unwrap(),
            mtime
        );
    }
}
