//! The warm pool in boot tests: started, read and stopped through
//! `host-ctl pool`, as a user would.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Fixture, Outcome, CMD, POD_LIMIT};

/// Starts a pool of `size` VMs with no network and waits until all of
/// them wait for a pod; their IDs.
pub fn start(fx: &Fixture, size: u32) -> Vec<String> {
    let size = size.to_string();
    let out = fx.host_ctl(
        &["pool", "start", "--size", &size, "--net", "none"],
        POD_LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let members = waiting(fx);
    assert_eq!(members.len().to_string(), size, "{}", out.dump());
    members
}

/// Stops the pool, which must then be gone.
pub fn stop(fx: &Fixture) {
    let out = fx.host_ctl(&["pool", "stop"], POD_LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let status = fx.host_ctl(&["pool", "status"], CMD);
    assert!(status.stdout.contains("no pool"), "{}", status.dump());
}

/// `pool status --format json`.
pub fn status(fx: &Fixture) -> Value {
    let out = fx.host_ctl(&["pool", "status", "--format", "json"], CMD);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    serde_json::from_str(&out.stdout).expect("pool status is JSON")
}

/// The IDs of the pool's members that wait for a pod.
pub fn waiting(fx: &Fixture) -> Vec<String> {
    status(fx)["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["state"] == "waiting")
        .filter_map(|m| m["id"].as_str().map(str::to_string))
        .collect()
}

/// Waits (up to 2 minutes) until `n` members wait, none of them in
/// `gone` (members handed out or killed); their IDs.
pub fn wait_for_waiting(fx: &Fixture, n: usize, gone: &[String]) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let w = waiting(fx);
        if w.len() >= n && !w.iter().any(|id| gone.contains(id)) {
            return w;
        }
        assert!(
            Instant::now() < until,
            "the pool was not refilled: {}",
            status(fx)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether `run --timings` (its output `out`) ran its pod in a VM of the
/// pool: it was claimed, and the pool said nothing against it.
pub fn served(out: &Outcome) -> bool {
    out.stderr.contains("  claimed") && !out.stderr.contains("host-ctl: pool:")
}
