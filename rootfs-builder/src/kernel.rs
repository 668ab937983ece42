//! Preparing the guest kernel for a fast boot.
//!
//! A distribution's `vmlinuz` is a bzImage: real-mode setup code and a
//! compressed kernel that decompresses itself at boot. Under emulation
//! (TCG) that decompression is most of the boot: Debian's xz-compressed
//! 6.1 kernel takes seconds to unpack itself. QEMU can instead load the
//! uncompressed ELF `vmlinux` directly through its PVH entry point, which
//! skips both the setup code and the decompression. This module extracts
//! that ELF and checks it has a PVH entry.

use crate::compression::Codec;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("not a bzImage (no \"HdrS\" setup header)")]
    NotBzImage,
    #[error("bzImage boot protocol {0:#x} is older than 2.08 (no payload fields)")]
    OldProtocol(u16),
    #[error("the payload lies outside the file")]
    Truncated,
    #[error("the payload's compression is not supported here (magic {0})")]
    UnknownCompression(String),
    #[error("decompressing the payload: {0}")]
    Decompress(String),
    #[error("the payload is not an ELF image")]
    NotElf,
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// The uncompressed ELF kernel inside a bzImage.
pub fn extract_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>, KernelError> {
    if bzimage.get(0x202..0x206) != Some(b"HdrS") {
        return Err(KernelError::NotBzImage);
    }
    let version = u16_at(bzimage, 0x206).ok_or(KernelError::NotBzImage)?;
    if version < 0x208 {
        return Err(KernelError::OldProtocol(version));
    }
    let setup_sects = match bzimage[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512;
    let offset = u32_at(bzimage, 0x248).ok_or(KernelError::Truncated)? as usize;
    let length = u32_at(bzimage, 0x24c).ok_or(KernelError::Truncated)? as usize;
    let payload = bzimage
        .get(start + offset..start + offset + length)
        .ok_or(KernelError::Truncated)?;
    let codec = Codec::sniff(payload).ok_or_else(|| {
        KernelError::UnknownCompression(
            payload.iter().take(6).map(|b| format!("{b:02x}")).collect(),
        )
    })?;
    let elf = codec
        .decompress(payload)
        .map_err(|e| KernelError::Decompress(e.to_string()))?;
    if !elf.starts_with(b"\x7fELF") {
        return Err(KernelError::NotElf);
    }
    Ok(elf)
}

/// Whether a 64-bit ELF kernel has a PVH entry point (a `Xen` note of type
/// `XEN_ELFNOTE_PHYS32_ENTRY`), which QEMU needs to boot it directly.
pub fn has_pvh_entry(elf: &[u8]) -> bool {
    const PT_NOTE: u32 = 4;
    const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
    if !elf.starts_with(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (u64_at(elf, 0x20), u16_at(elf, 0x36), u16_at(elf, 0x38))
    else {
        return false;
    };
    for i in 0..usize::from(phnum) {
        let ph = phoff as usize + i * usize::from(phentsize);
        if u32_at(elf, ph) != Some(PT_NOTE) {
            continue;
        }
        let (Some(off), Some(size)) = (u64_at(elf, ph + 8), u64_at(elf, ph + 32)) else {
            continue;
        };
        let (mut at, end) = (off as usize, (off + size) as usize);
        while at + 12 <= end {
            let (Some(namesz), Some(descsz), Some(kind)) =
                (u32_at(elf, at), u32_at(elf, at + 4), u32_at(elf, at + 8))
            else {
                break;
            };
            let name_at = at + 12;
            let name = elf
                .get(name_at..name_at + namesz as usize)
                .unwrap_or_default();
            if name == b"Xen\0" && kind == XEN_ELFNOTE_PHYS32_ENTRY {
                return true;
            }
            let align = |n: u32| (n as usize).div_ceil(4) * 4;
            at = name_at + align(namesz) + align(descsz);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with one PT_NOTE holding one note.
    fn elf_with_note(name: &[u8], kind: u32) -> Vec<u8> {
        let mut e = vec![0u8; 0x40];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        e[5] = 1;
        e[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes()); // phoff
        e[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // phentsize
        e[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // phnum
        let note_at = 0x40 + 56;
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&4u32.to_le_bytes());
        ph[8..16].copy_from_slice(&(note_at as u64).to_le_bytes());
        let mut note = Vec::new();
        note.extend_from_slice(&(name.len() as u32).to_le_bytes());
        note.extend_from_slice(&8u32.to_le_bytes());
        note.extend_from_slice(&kind.to_le_bytes());
        note.extend_from_slice(name);
        while note.len() % 4 != 0 {
            note.push(0);
        }
        note.extend_from_slice(&[0u8; 8]);
        ph[32..40].copy_from_slice(&(note.len() as u64).to_le_bytes());
        e.extend_from_slice(&ph);
        e.extend_from_slice(&note);
        e
    }

    fn bzimage_around(payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 5 * 512];
        b[0x1f1] = 4;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        b[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        b[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        b.extend_from_slice(&[0u8; 16]);
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn vmlinux_comes_out_of_a_bzimage_and_pvh_is_seen() {
        let elf = elf_with_note(b"Xen\0", 18);
        assert!(has_pvh_entry(&elf));
        for codec in [Codec::Gzip, Codec::Xz, Codec::Zstd] {
            let packed = crate::compression::tests::compress(codec, &elf);
            assert_eq!(
                extract_vmlinux(&bzimage_around(&packed)).unwrap(),
                elf,
                "{codec:?}"
            );
        }
    }

    #[test]
    fn other_notes_and_bad_images_are_told_apart() {
        assert!(!has_pvh_entry(&elf_with_note(b"Xen\0", 17)));
        assert!(!has_pvh_entry(&elf_with_note(b"GNU\0", 18)));
        assert!(!has_pvh_entry(b"\x7fELF"));
        assert_eq!(
            extract_vmlinux(b"MZ not a kernel"),
            Err(KernelError::NotBzImage)
        );
        let mut b = bzimage_around(b"BZh91AY&SY");
        assert!(matches!(
            extract_vmlinux(&b),
            Err(KernelError::UnknownCompression(_))
        ));
        b.truncate(5 * 512 + 20);
        assert_eq!(extract_vmlinux(&b), Err(KernelError::Truncated));
    }

    #[test]
    fn the_installed_debian_kernel_if_any_has_a_pvh_entry() {
        // Not every machine has one; where it does, this is the real check.
        let Some(image) = std::fs::read_dir("/boot").ok().and_then(|d| {
            d.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
        }) else {
            return;
        };
        let Ok(bytes) = std::fs::read(&image) else {
            return;
        };
        let elf = extract_vmlinux(&bytes).unwrap();
        assert!(has_pvh_entry(&elf), "{}", image.display());
    }
}
