//! Reading the guest's serial console (kept in the pod directory) for what
//! the user needs when the agent does not answer: how far the boot got, and
//! the agent's `FATAL` line if it wrote one.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use kvmpod_api::console::{self, AgentLine};
use kvmpod_api::timeline::Stage;

/// What the console says about the boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootProgress {
    /// The last stage the agent announced, or a kernel-side description.
    pub stage: String,
    /// The agent's `FATAL: ...` line, if any.
    pub fatal: Option<String>,
}

/// Whether `console` shows the agent serving its API.
pub fn agent_ready(console: &[u8]) -> bool {
    console::reached(console, Stage::AgentReady)
}

pub fn progress(text: &str) -> BootProgress {
    let mut stage = None;
    let mut fatal = None;
    let mut printed = false;
    let mut panicked = None;
    for line in text.lines() {
        match console::parse(line) {
            Some(AgentLine::Stage { name, at }) => {
                stage = Some(match at {
                    Some(at) => format!("\"{name}\" (at {at} of guest time)"),
                    None => format!("\"{name}\""),
                });
            }
            Some(AgentLine::Fatal(f)) => fatal = Some(f.to_string()),
            Some(AgentLine::Message(_)) => {}
            None if line.contains("Kernel panic") => panicked = Some(line.trim().to_string()),
            None if !line.trim().is_empty() => printed = true,
            None => {}
        }
    }
    let stage = match (stage, panicked) {
        (Some(s), _) => format!("agent stage {s}"),
        (None, Some(p)) => format!("kernel panic before the agent started ({p})"),
        (None, None) if printed => {
            "the guest wrote to its console, but the kvmpod agent never started (is /init the agent?)".into()
        }
        (None, None) => {
            "nothing on the console: the guest never reached /init (the kernel runs with `quiet`; --debug shows its messages)"
                .into()
        }
    };
    BootProgress { stage, fatal }
}

/// Waits until the guest's console shows the agent serving, the VM ends
/// (`vm_exited`), or `until`; the first connection attempt follows.
/// Attempting earlier, before the guest's vsock driver is up, is not just
/// wasted: vhost-device-vsock 0.3.0 queued those requests and then stopped
/// answering handshakes at all in slow boots (seen in the 40-volume boot
/// test). Kata solved the same race by letting the guest speak first.
pub async fn wait_until_ready(console: &Path, vm_exited: &mut dyn FnMut() -> bool, until: Instant) {
    wait_until_stage(console, Stage::AgentReady, vm_exited, until).await;
}

/// Waits until the console shows the agent reached `stage`, the VM exited
/// (`vm_exited`), or `until`; whether it reached it.
pub async fn wait_until_stage(
    console: &Path,
    stage: Stage,
    vm_exited: &mut dyn FnMut() -> bool,
    until: Instant,
) -> bool {
    let mut seen = 0;
    let mut tail = Vec::new();
    while Instant::now() < until && !vm_exited() {
        if let Some(new) = read_after(console, seen) {
            seen += new.len() as u64;
            tail.extend_from_slice(&new);
            if console::reached(&tail, stage) {
                return true;
            }
            // Keep only the unfinished last line.
            let keep = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            tail.drain(..keep);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Whether the console file shows the agent reached `stage`.
pub fn file_reached(console: &Path, stage: Stage) -> bool {
    std::fs::read(console).is_ok_and(|text| console::reached(&text, stage))
}

/// What a file holds after byte `from`.
fn read_after(path: &Path, from: u64) -> Option<Vec<u8>> {
    let mut f = File::open(path).ok()?;
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut new = Vec::new();
    f.read_to_end(&mut new).ok()?;
    Some(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_is_found_among_kernel_messages() {
        assert!(!agent_ready(
            b"[    0.1] Linux\nkvmpod-agent: stage init at 1.2s\n"
        ));
        assert!(!agent_ready(b"kvmpod-agent: stage agent-rea"));
        assert!(agent_ready(
            b"[    0.1] Linux\r\nkvmpod-agent: stage agent-ready at 1.5s\r\n"
        ));
    }

    #[test]
    fn last_stage_and_fatal_line_are_found() {
        let c = "[    0.1] Linux version 6.1\nkvmpod-agent: stage init at 2.1s\nkvmpod-agent: stage modules-loaded at 2.500123s\nkvmpod-agent: FATAL: loading kernel modules: /lib/x.ko: No such file\n";
        let p = progress(c);
        assert_eq!(
            p.stage,
            "agent stage \"modules-loaded\" (at 2.500123s of guest time)"
        );
        assert_eq!(
            p.fatal.as_deref(),
            Some("loading kernel modules: /lib/x.ko: No such file")
        );
    }

    #[test]
    fn kernel_only_consoles_are_described() {
        assert!(progress("").stage.contains("never reached /init"));
        assert!(progress("[    0.000000] Linux version 6.1.0\n")
            .stage
            .contains("agent never started"));
        assert!(progress("Please press Enter to activate this console.\n")
            .stage
            .contains("is /init the agent?"));
        let p = progress("[ 1.0] Kernel panic - not syncing: No working init found.\n");
        assert!(p.stage.contains("kernel panic"), "{}", p.stage);
    }
}
