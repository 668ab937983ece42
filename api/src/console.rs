//! The lines the agent writes on the guest's serial console, and their
//! parser for host-ctl.
//!
//! Until vsock is up the console is the agent's only voice: a host whose
//! agent never answers reads how far the boot got (`stage` lines) and the
//! one `FATAL` line. host-ctl also waits for the `agent-ready` stage before
//! its first vsock connection attempt.

use std::fmt;

use crate::timeline::Stage;

/// Every console line the agent writes starts with `kvmpod-agent: `.
pub const PREFIX: &str = "kvmpod-agent";

/// `kvmpod-agent: stage <name> at <s>.<µs>s`.
pub fn stage_line(stage: Stage, boottime_ns: u64) -> String {
    format!(
        "{PREFIX}: stage {stage} at {}.{:06}s",
        boottime_ns / 1_000_000_000,
        (boottime_ns % 1_000_000_000) / 1000
    )
}

/// `kvmpod-agent: FATAL: <what>: <error>`.
pub fn fatal_line(what: &str, error: &dyn fmt::Display) -> String {
    format!("{PREFIX}: FATAL: {what}: {error}")
}

/// Any other agent line (warnings, debug output).
pub fn message_line(args: fmt::Arguments<'_>) -> String {
    format!("{PREFIX}: {args}")
}

/// An agent line, as the host reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentLine<'a> {
    /// A stage reached; `at` is the guest time as written ("2.500123s").
    /// `name` is kept as text: an agent newer than host-ctl may announce
    /// stages this build does not know.
    Stage { name: &'a str, at: Option<&'a str> },
    /// The agent's fatal error, without the `FATAL: ` prefix.
    Fatal(&'a str),
    /// Any other line of the agent's.
    Message(&'a str),
}

impl AgentLine<'_> {
    /// The stage, when this line announces a known one.
    pub fn stage(&self) -> Option<Stage> {
        match self {
            AgentLine::Stage { name, .. } => name.parse().ok(),
            _ => None,
        }
    }
}

/// The agent's part of a console line (kernel messages may precede it on
/// the same line), or `None` for a line that is not the agent's.
pub fn parse(line: &str) -> Option<AgentLine<'_>> {
    let marker = format!("{PREFIX}: ");
    let rest = line[line.find(&marker)? + marker.len()..].trim_end();
    if let Some(s) = rest.strip_prefix("stage ") {
        let s = s.trim();
        return Some(match s.split_once(" at ") {
            Some((name, at)) => AgentLine::Stage { name, at: Some(at) },
            None => AgentLine::Stage { name: s, at: None },
        });
    }
    if let Some(f) = rest.strip_prefix("FATAL: ") {
        return Some(AgentLine::Fatal(f.trim()));
    }
    Some(AgentLine::Message(rest))
}

/// Whether the console text shows `stage` reached (it may be read while
/// the guest is still writing, so a partial last line does not count).
pub fn reached(console: &[u8], stage: Stage) -> bool {
    let text = String::from_utf8_lossy(console);
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => return false,
    };
    complete
        .lines()
        .filter_map(parse)
        .any(|l| l.stage() == Some(stage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_lines_round_trip() {
        let l = stage_line(Stage::ModulesLoaded, 2_500_123_456);
        assert_eq!(l, "kvmpod-agent: stage modules-loaded at 2.500123s");
        let p = parse(&l).unwrap();
        assert_eq!(
            p,
            AgentLine::Stage {
                name: "modules-loaded",
                at: Some("2.500123s")
            }
        );
        assert_eq!(p.stage(), Some(Stage::ModulesLoaded));
    }

    #[test]
    fn fatal_and_other_lines_parse() {
        let l = fatal_line("loading kernel modules", &"/lib/x.ko: No such file");
        assert_eq!(
            parse(&l),
            Some(AgentLine::Fatal(
                "loading kernel modules: /lib/x.ko: No such file"
            ))
        );
        assert_eq!(
            parse("[ 1.0] x kvmpod-agent: warning: lo\r"),
            Some(AgentLine::Message("warning: lo"))
        );
        assert_eq!(parse("[    0.1] Linux version 6.1"), None);
    }

    #[test]
    fn the_ready_stage_is_found_among_kernel_messages() {
        let ready = stage_line(Stage::AgentReady, 1_500_000_000);
        assert!(!reached(
            b"[ 0.1] Linux\nkvmpod-agent: stage init at 1.2s\n",
            Stage::AgentReady
        ));
        assert!(!reached(
            b"kvmpod-agent: stage agent-rea",
            Stage::AgentReady
        ));
        assert!(
            !reached(ready.as_bytes(), Stage::AgentReady),
            "no newline yet"
        );
        let console = format!("[ 0.1] Linux\r\n{ready}\r\n");
        assert!(reached(console.as_bytes(), Stage::AgentReady));
    }
}
