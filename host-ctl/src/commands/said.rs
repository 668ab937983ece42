//! What host-ctl told this user before about the host's choices, kept in
//! `<state>/said.json` so that each is said once and again when it
//! changes (`ui::notes` decides what to say from it).

use std::path::{Path, PathBuf};

use crate::ui::notes::{self, Notes, Said, Verbosity};
use crate::ui::progress;

fn said_file(state_dir: &Path) -> PathBuf {
    state_dir.join("said.json")
}

/// Says `notes` on stderr (above any progress shown) as `verbosity` and
/// the memory in `state_dir` say, and remembers what was said.
pub fn tell(state_dir: &Path, notes: &Notes, verbosity: Verbosity) {
    for line in remembered(state_dir, notes, verbosity) {
        progress::say(&line);
    }
}

/// The lines to say; the memory is updated when it changed. Remembering
/// is best effort: a state directory that cannot be written means the
/// choices are said again.
fn remembered(state_dir: &Path, notes: &Notes, verbosity: Verbosity) -> Vec<String> {
    let path = said_file(state_dir);
    let before: Said = std::fs::read(&path)
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
        .unwrap_or_default();
    let mut said = before.clone();
    let lines = notes::to_say(notes, &mut said, verbosity);
    if said != before {
        remember(&path, &said);
    }
    lines
}

/// Writes `said` to `path` whole (a temporary file renamed over it), so a
/// concurrent reader sees the old or the new, never half.
fn remember(path: &Path, said: &Said) {
    let Ok(text) = serde_json::to_vec_pretty(said) else {
        return;
    };
    let tmp = path.with_extension(format!("json.{}", std::process::id()));
    if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notes(accel: &str) -> Notes {
        let mut n = Notes::default();
        n.choose("accelerator", accel);
        n.warn("network none: this host has no IPv4 default route");
        n
    }

    #[test]
    fn the_memory_outlives_the_process_and_quiet_leaves_it() {
        let state = tempfile::tempdir().unwrap();
        let s = state.path();
        let v = Verbosity::Normal;
        assert_eq!(remembered(s, &notes("tcg: PVM"), v).len(), 2);
        assert!(said_file(s).exists());
        // A new process (the file read afresh) says only the warning.
        assert_eq!(
            remembered(s, &notes("tcg: PVM"), v),
            ["host-ctl: network none: this host has no IPv4 default route"]
        );
        assert!(remembered(s, &notes("kvm: probed"), Verbosity::Quiet).is_empty());
        assert_eq!(remembered(s, &notes("kvm: probed"), v).len(), 2);
    }

    #[test]
    fn an_unwritable_state_directory_only_means_saying_it_again() {
        let missing = Path::new("/nonexistent/kvmpod-state");
        for _ in 0..2 {
            let out = remembered(missing, &notes("tcg: PVM"), Verbosity::Normal);
            assert!(out[0].contains("accelerator tcg: PVM"), "{out:?}");
        }
    }
}
