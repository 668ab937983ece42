//! Finding the programs a VM needs on the host. A missing one is reported
//! with the fix: `make deps` installs them all.

use std::env;
use std::path::{Path, PathBuf};

use super::VmmError;

/// What to tell a user who lacks something kvmpod installs.
pub const DEPS_HINT: &str = "run `make deps` (as root) to install what kvmpod needs";

/// `name` on `PATH`, or in the extra directories (cargo's bin directory is
/// not always on a root shell's `PATH`).
fn which(name: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Where `cargo install` puts programs.
pub fn cargo_bin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(h) = env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(h).join("bin"));
    }
    if let Some(h) = env::var_os("HOME") {
        dirs.push(PathBuf::from(h).join(".cargo/bin"));
    }
    dirs.push("/root/.cargo/bin".into());
    dirs
}

/// A program named by the environment variable `var`, or `name` found on
/// `PATH` (then in `extra`); `what` names it in the error.
pub fn find_program(
    var: &str,
    name: &str,
    what: &str,
    extra: &[PathBuf],
) -> Result<PathBuf, VmmError> {
    if let Some(p) = env::var_os(var) {
        let p = PathBuf::from(p);
        if is_executable(&p) {
            return Ok(p);
        }
        return Err(VmmError::MissingProgram(format!(
            "{var}={} is not an executable file",
            p.display()
        )));
    }
    which(name, extra).ok_or_else(|| {
        VmmError::MissingProgram(format!(
            "{what} ({name}) was not found on PATH; {DEPS_HINT}"
        ))
    })
}

/// Whether a 64-bit little-endian ELF asks for a program interpreter.
pub fn elf_interpreter(b: &[u8]) -> Result<bool, &'static str> {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map(|s| u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]))
    };
    if b.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF file");
    }
    if b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF");
    }
    let phoff = u64_at(0x20).ok_or("truncated header")? as usize;
    let phentsize = u16_at(0x36).ok_or("truncated header")? as usize;
    let phnum = u16_at(0x38).ok_or("truncated header")? as usize;
    for i in 0..phnum {
        let kind = u32_at(phoff + i * phentsize).ok_or("truncated program headers")?;
        if kind == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}
