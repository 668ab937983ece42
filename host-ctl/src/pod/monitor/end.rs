//! How a pod's end is recorded, and what a user is told when its agent
//! never answered.

use std::time::Duration;

use kvmpod_api::protocol::{PodState, PodStatus};

use crate::agent::{console, AgentError};
use crate::pod::record::{self, AppSummary, PodRecord, State, TimelineEntry};
use crate::pod::{PodDir, PodError};
use crate::ui::text::indent;
use crate::vmm::process::tail;
use crate::vmm::Supervised;

/// Records the pod's end (once: an exited record is never rewritten).
pub fn record_end(
    dir: &PodDir,
    status: Option<&PodStatus>,
    reason: String,
) -> Result<PodRecord, PodError> {
    record::update(dir, |r| {
        if r.state == State::Exited {
            return;
        }
        r.state = State::Exited;
        r.finished = Some(record::now());
        if let Some(st) = status {
            r.apps = st.apps.iter().map(AppSummary::from_status).collect();
            r.timeline = st.timeline.iter().map(TimelineEntry::from).collect();
        }
        let reason = match (&r.stop_requested, status) {
            (Some(_), _) => "stopped by host-ctl stop".to_string(),
            (None, Some(st)) if st.state.enum_value_or_default() == PodState::POD_STATE_FAILED => {
                format!("pod setup failed: {}", st.error)
            }
            _ => reason,
        };
        r.exit_reason = Some(reason);
    })
}

/// Why a boot failed, with how far the guest got (its console) and what
/// the hypervisor said.
pub fn boot_failure(dir: &PodDir, vm: &Supervised, e: AgentError, timeout: Duration) -> PodError {
    let console_text = std::fs::read_to_string(dir.console_log()).unwrap_or_default();
    let progress = console::progress(&console_text);
    let what = match e {
        AgentError::VmExited(status) => format!(
            "the VM exited ({status}) before its agent answered; {} said:\n{}",
            vm.what,
            indent(&vm.log_tail(10))
        ),
        AgentError::Timeout(last) => format!(
            "the agent did not answer within {}s (last error: {last})",
            timeout.as_secs()
        ),
        other => other.to_string(),
    };
    let mut msg = format!("{what}\nthe guest got to: {}", progress.stage);
    if let Some(f) = progress.fatal {
        msg.push_str(&format!("\nthe agent reported: {f}"));
    }
    msg.push_str(&format!(
        "\nconsole ({}), last lines:\n{}",
        dir.console_log().display(),
        indent(&tail(&dir.console_log(), 15))
    ));
    PodError::Boot(msg)
}
