//! What host-ctl tells the user about how it runs a pod, beside the pod's
//! own output. Two kinds, said differently:
//!
//! * *choices* about this host's facilities (the accelerator, the vsock
//!   transport, the machine): the same for pod after pod, so each is said
//!   the first time and whenever it changes, and every time with
//!   `--verbose` (`host-ctl info` shows them all, always). What was said
//!   last is the caller's to keep ([`Said`]).
//! * *warnings*: something the user asked for that host-ctl did otherwise,
//!   said every time (unless `--quiet`).

use std::collections::BTreeMap;

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

/// The choices said last, by topic: what the caller keeps between runs
/// (`commands::said` keeps it in the state directory).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Said(BTreeMap<String, String>);

/// The lines to say of `notes` at `verbosity`, each prefixed `host-ctl: `,
/// given what was `said` before, which is brought up to date. `--quiet`
/// says nothing and remembers nothing, so the choices are said when the
/// user next listens.
pub fn to_say(notes: &Notes, said: &mut Said, verbosity: Verbosity) -> Vec<String> {
    if verbosity == Verbosity::Quiet {
        return Vec::new();
    }
    let mut lines = Vec::new();
    for c in &notes.choices {
        let before = said.0.get(c.topic);
        if verbosity == Verbosity::Verbose || before != Some(&c.text) {
            lines.push(format!("host-ctl: {} {}", c.topic, c.text));
        }
        if before != Some(&c.text) {
            said.0.insert(c.topic.to_string(), c.text.clone());
        }
    }
    lines.extend(notes.warnings.iter().map(|w| format!("host-ctl: {w}")));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(memory: &mut Said, notes: &Notes, v: Verbosity) -> String {
        to_say(notes, memory, v)
            .iter()
            .map(|l| format!("{l}\n"))
            .collect()
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
        let s = &mut Said::default();
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
    fn a_note_is_a_line() {
        assert_eq!(
            notes("tcg: PVM").lines()[0],
            "accelerator tcg: PVM".to_string()
        );
    }
}
