//! The kernel image QEMU boots. Where the guest kernel has a PVH entry,
//! QEMU boots its uncompressed ELF directly: under TCG the bzImage's
//! self-decompression is most of the boot (about half of Debian's). The ELF
//! is extracted once per kernel and cached in the state directory.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rootfs_builder::kernel::{extract_vmlinux, has_pvh_entry};

use crate::vmm::{Cache, VmmError};

/// The image to pass to `-kernel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootKernel {
    pub path: PathBuf,
    /// Booted through its PVH entry (an uncompressed ELF).
    pub pvh: bool,
}

/// The fastest image to boot `kernel` from: a cached PVH ELF when one can
/// be had, else the kernel as it is (with a note saying why). With
/// [`Cache::ReadOnly`] nothing is written: an image not cached yet is
/// extracted in memory only, to learn whether it has a PVH entry, and the
/// path it would be cached at is returned.
pub fn boot_kernel(kernel: &Path, cache_dir: &Path, mode: Cache) -> BootKernel {
    let as_is = || BootKernel {
        path: kernel.to_path_buf(),
        pvh: false,
    };
    match pvh_image(kernel, cache_dir, mode) {
        Ok(Some(path)) => BootKernel { path, pvh: true },
        Ok(None) => as_is(),
        Err(e) => {
            crate::ui::progress::say(&format!(
                "host-ctl: note: booting {} as a bzImage: {e}",
                kernel.display()
            ));
            as_is()
        }
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VmmError {
    let path = path.to_path_buf();
    move |source| VmmError::Io { what, path, source }
}

/// The cached ELF for `kernel`, extracting it on first use; None when the
/// kernel has no PVH entry.
fn pvh_image(kernel: &Path, cache_dir: &Path, mode: Cache) -> Result<Option<PathBuf>, VmmError> {
    let meta = fs::metadata(kernel).map_err(io("reading", kernel))?;
    let mut h = DefaultHasher::new();
    fs::canonicalize(kernel)
        .map_err(io("reading", kernel))?
        .hash(&mut h);
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
    let bytes = fs::read(kernel).map_err(io("reading", kernel))?;
    if bytes.starts_with(b"\x7fELF") {
        // Already an ELF: boot it as it is if it can be.
        return Ok(has_pvh_entry(&bytes).then(|| kernel.to_path_buf()));
    }
    let elf = extract_vmlinux(&bytes)
        .map_err(|e| VmmError::Unsupported(format!("extracting the uncompressed kernel: {e:#}")))?;
    let pvh = has_pvh_entry(&elf);
    if mode == Cache::ReadOnly {
        return Ok(pvh.then_some(elf_path));
    }
    fs::create_dir_all(cache_dir).map_err(io("creating", cache_dir))?;
    if !pvh {
        fs::write(&no_pvh, b"").map_err(io("writing", &no_pvh))?;
        return Ok(None);
    }
    // Written under a unique name and renamed: concurrent runs never see
    // half a file.
    let tmp = cache_dir.join(format!(".vmlinux-{key}.{}", std::process::id()));
    fs::write(&tmp, &elf).map_err(io("writing", &tmp))?;
    fs::rename(&tmp, &elf_path).map_err(io("writing", &elf_path))?;
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
        let b = boot_kernel(&k, &dir.path().join("cache"), Cache::Write);
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
        // Debian's kernel, which `make deps` installs.
        let image = fs::read_dir("/boot")
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().contains("vmlinuz-"))
            .expect("a guest kernel in /boot (`make deps` installs one)");
        let dir = tempfile::tempdir().unwrap();
        let planned = boot_kernel(&image, dir.path(), Cache::ReadOnly);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "a read-only look wrote to the cache"
        );
        let first = boot_kernel(&image, dir.path(), Cache::Write);
        assert_eq!(planned, first, "the planned path is the cached one");
        assert!(first.pvh, "{first:?}");
        let mtime = fs::metadata(&first.path).unwrap().modified().unwrap();
        let again = boot_kernel(&image, dir.path(), Cache::Write);
        assert_eq!(first, again);
        assert_eq!(
            fs::metadata(&again.path).unwrap().modified().unwrap(),
            mtime
        );
    }
}
