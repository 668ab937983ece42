//! Pod names (`run --name`): each a file `<state>/names/<name>` holding
//! the pod's ID, created exclusively, so two pods never get one name. A
//! name is kept until its pod is removed (as docker keeps a stopped
//! container's); a name whose pod directory is gone is free again.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::dir::PodDir;
use super::PodError;

type Result<T> = std::result::Result<T, PodError>;

fn names_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("names")
}

/// Why a name is not usable: letters, digits, `_`, `.` and `-`, starting
/// with a letter or digit, at most 64 characters (docker's rule).
pub fn check(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(PodError::Invalid(format!(
            "{name:?} is not a valid pod name: use letters, digits, '_', '.' and '-', starting with a letter or digit (at most 64)"
        )))
    }
}

/// Gives `name` to pod `id`; refused while another pod has it.
pub fn claim(state_dir: &Path, name: &str, id: &str) -> Result<()> {
    check(name)?;
    let dir = names_dir(state_dir);
    fs::create_dir_all(&dir).map_err(|source| PodError::Io {
        what: "creating",
        path: dir.clone(),
        source,
    })?;
    let path = dir.join(name);
    for _ in 0..2 {
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                return f.write_all(id.as_bytes()).map_err(|source| PodError::Io {
                    what: "writing",
                    path: path.clone(),
                    source,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                match lookup(state_dir, name) {
                    Some(holder) => {
                        return Err(PodError::Invalid(format!(
                            "the name {name:?} is in use by pod {holder} (remove it with `host-ctl rm {name}`, or choose another name)"
                        )))
                    }
                    // Its pod is gone: the name is free.
                    None => {
                        let _ = fs::remove_file(&path);
                    }
                }
            }
            Err(source) => {
                return Err(PodError::Io {
                    what: "creating",
                    path,
                    source,
                })
            }
        }
    }
    Err(PodError::Invalid(format!(
        "could not claim the name {name:?}"
    )))
}

/// The pod named `name`, if its directory still exists.
pub fn lookup(state_dir: &Path, name: &str) -> Option<String> {
    if check(name).is_err() {
        return None;
    }
    let id = fs::read_to_string(names_dir(state_dir).join(name)).ok()?;
    let id = id.trim().to_string();
    PodDir::of(state_dir, &id).path.is_dir().then_some(id)
}

/// Frees `name` if pod `id` holds it.
pub fn release(state_dir: &Path, name: &str, id: &str) {
    let path = names_dir(state_dir).join(name);
    if fs::read_to_string(&path).is_ok_and(|holder| holder.trim() == id) {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_held_until_its_pod_is_gone() {
        let state = tempfile::tempdir().unwrap();
        let a = PodDir::of(state.path(), "aaaa-1");
        fs::create_dir_all(&a.path).unwrap();
        claim(state.path(), "web", "aaaa-1").unwrap();
        assert_eq!(lookup(state.path(), "web").as_deref(), Some("aaaa-1"));
        let e = claim(state.path(), "web", "bbbb-2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("in use by pod aaaa-1"), "{e}");
        fs::remove_dir_all(&a.path).unwrap();
        claim(state.path(), "web", "bbbb-2").unwrap();
        release(state.path(), "web", "aaaa-1");
        assert!(
            names_dir(state.path()).join("web").exists(),
            "released by a pod that did not hold it"
        );
        release(state.path(), "web", "bbbb-2");
        assert!(!names_dir(state.path()).join("web").exists());
    }

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["web", "web-1", "a.b_c", "9lives"] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
