//! What host-ctl tells the user about how it runs a pod, beside the pod's
//! own output. Two kinds, said differently:
//!
//! * *choices* about this host's facilities (the accelerator, the vsock
//!   transport, the machine): the same for pod after pod, so each is said
//!   the first time and whenever it changes, and every time with
//!   `--verbose` (`host-ctl info` shows them all, always). What was said
//!   last is kept in `<state>/said.json`.
//! * *warnings*: something the user asked for that host-ctl did otherwise,
//!   said every time (unless `--quiet`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A choice about this host's facilities, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// What was chosen: `accelerator`, `vsock`, `machine`.
    pub topic: &'static str,
    /// The choice and its reason, as said (`tcg: this host's KVM is ...`).
    pub text: String,
}

/// What planning a pod found worth telling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notes {
    pub choices: Vec<Choice>,
    pub warnings: Vec<String>,
}

impl Notes {
    pub fn choose(&mut self, topic: &'static str, text: impl Into<String>) {
        self.choices.push(Choice {
            topic,
            text: text.into(),
        });
    }

    pub fn warn(&mut self, text: impl Into<String>) {
        self.warnings.push(text.into());
    }

    /// Every note as a line, choices first (`host-ctl args`, which shows
    /// everything).
    pub fn lines(&self) -> Vec<String> {
        self.choices
            .iter()
            .map(|c| format!("{} {}", c.topic, c.text))
            .chain(self.warnings.iter().cloned())
            .collect()
    }
}

/// How much host-ctl says (`--quiet`, `--verbose`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Verbosity {
    /// Errors and warnings only.
    Quiet,
    /// Warnings, and choices when they change.
    #[default]
    Normal,
    /// Everything, every time.
    Verbose,
}

/// The choices said last, by topic.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Said(BTreeMap<String, String>);

fn said_file(state_dir: &Path) -> PathBuf {
    state_dir.join("said.json")
}

/// Tells `notes` on stderr as `verbosity` says, each line prefixed
/// `host-ctl: `.
pub fn tell(state_dir: &Path, notes: &Notes, verbosity: Verbosity) {
    let _ = tell_to(&mut std::io::stderr(), state_dir, notes, verbosity);
}

/// [`tell`] to `out`. Remembering what was said is best effort: a state
/// directory that cannot be written means choices are said again.
pub fn tell_to(
    out: &mut dyn Write,
    state_dir: &Path,
    notes: &Notes,
    verbosity: Verbosity,
) -> std::io::Result<()> {
    if verbosity == Verbosity::Quiet {
        return Ok(());
    }
    let path = said_file(state_dir);
    let mut said: Said = std::fs::read(&path)
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
        .unwrap_or_default();
    let mut changed = false;
    for c in &notes.choices {
        let before = said.0.get(c.topic);
        if verbosity == Verbosity::Verbose || before != Some(&c.text) {
            writeln!(out, "host-ctl: {} {}", c.topic, c.text)?;
        }
        if before != Some(&c.text) {
            said.0.insert(c.topic.to_string(), c.text.clone());
            changed = true;
        }
    }
    for w in &notes.warnings {
        writeln!(out, "host-ctl: {w}")?;
    }
    if changed {
        remember(&path, &said);
    }
    Ok(())
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

    fn said(state: &Path, notes: &Notes, v: Verbosity) -> String {
        let mut out = Vec::new();
        tell_to(&mut out, state, notes, v).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn notes(accel: &str) -> Notes {
        let mut n = Notes::default();
        n.choose("accelerator", accel);
        n.choose("vsock", "hybrid (vhost-device-vsock): no /dev/vhost-vsock");
        n.warn("network none: this host has no IPv4 default route");
        n
    }

    #[test]
    fn choices_are_said_once_and_again_when_they_change() {
        let state = tempfile::tempdir().unwrap();
        let s = state.path();
        let first = said(s, &notes("tcg: PVM"), Verbosity::Normal);
        assert_eq!(
            first,
            "host-ctl: accelerator tcg: PVM\n\
             host-ctl: vsock hybrid (vhost-device-vsock): no /dev/vhost-vsock\n\
             host-ctl: network none: this host has no IPv4 default route\n"
        );
        // Warnings every time; the choices not again.
        let second = said(s, &notes("tcg: PVM"), Verbosity::Normal);
        assert_eq!(
            second,
            "host-ctl: network none: this host has no IPv4 default route\n"
        );
        // A changed choice is said, and only it.
        let changed = said(s, &notes("kvm: the probe guest ran"), Verbosity::Normal);
        assert!(changed.starts_with("host-ctl: accelerator kvm: the probe guest ran\n"));
        assert!(!changed.contains("vsock"), "{changed}");
        // --verbose says everything; --quiet nothing, and remembers nothing.
        let all = said(s, &notes("kvm: the probe guest ran"), Verbosity::Verbose);
        assert_eq!(all.lines().count(), 3, "{all}");
        assert_eq!(said(s, &notes("tcg: PVM"), Verbosity::Quiet), "");
        let after_quiet = said(s, &notes("tcg: PVM"), Verbosity::Normal);
        assert!(
            after_quiet.contains("accelerator tcg: PVM"),
            "{after_quiet}"
        );
    }

    #[test]
    fn an_unwritable_state_directory_only_means_saying_it_again() {
        let missing = Path::new("/nonexistent/kvmpod-state");
        for _ in 0..2 {
            let out = said(missing, &notes("tcg: PVM"), Verbosity::Normal);
            assert!(out.contains("accelerator tcg: PVM"), "{out}");
        }
        assert_eq!(
            notes("tcg: PVM").lines()[0],
            "accelerator tcg: PVM".to_string()
        );
    }
}
