//! The boot timeline: named `CLOCK_BOOTTIME` stamps, so the host can see
//! where a pod's start-up time goes, from the kernel's start onwards.

use std::sync::Mutex;

use kvmpod_api::timeline::Mark;
use nix::time::{clock_gettime, ClockId};

/// Nanoseconds since the guest kernel started (including any suspend).
pub fn boottime_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Default)]
pub struct Timeline {
    events: Mutex<Vec<(String, u64)>>,
}

impl Timeline {
    /// Records `name` now and returns the stamp.
    pub fn mark(&self, name: impl Into<Mark>) -> u64 {
        self.mark_at(name, boottime_ns())
    }

    pub fn mark_at(&self, name: impl Into<Mark>, ns: u64) -> u64 {
        if let Ok(mut events) = self.events.lock() {
            events.push((name.into().to_string(), ns));
        }
        ns
    }

    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}
