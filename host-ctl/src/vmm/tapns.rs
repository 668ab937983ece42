//! A CNI network namespace taken over by a VM, as Kata's VMs take it: a
//! tap for the hypervisor and a bridge holding the tap and the interface
//! the CNI plugin made, whose address moves to the guest. Undone when the
//! pod is over, so the namespace is as CNI left it. The namespace is
//! changed with iproute2's `ip`, run inside it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::{netns, VmmError};

/// The tap and bridge made in the namespace.
pub const TAP: &str = "kvmpod0";
pub const BRIDGE: &str = "kvmpod-br0";

/// What was moved, to put it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TapWiring {
    pub netns: PathBuf,
    /// The CNI plugin's interface.
    pub interface: String,
    /// Its address, `ADDRESS/PREFIX`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<std::net::Ipv4Addr>,
    pub mtu: u32,
    /// The interface's MAC address, which the guest takes (the node's
    /// neighbours learnt it for the pod's address), and the one the
    /// interface gets meanwhile.
    pub mac: String,
    pub stand_in_mac: String,
}

/// Runs `ip ARGS` in namespace `ns`; its stdout.
pub fn ip_in(ns: &Path, args: &[&str]) -> Result<String, VmmError> {
    let file = netns::open(ns)?;
    let mut cmd = Command::new("ip");
    cmd.args(args);
    // SAFETY: setns is async-signal-safe; the file was opened before the
    // fork.
    unsafe {
        cmd.pre_exec(move || netns::join(&file));
    }
    let out = cmd
        .output()
        .map_err(|e| VmmError::Process(format!("running ip (iproute2): {e}")))?;
    if !out.status.success() {
        return Err(VmmError::Process(format!(
            "ip {} in {}: {}",
            args.join(" "),
            ns.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Bridges a new tap to the namespace's interface and takes the
/// interface's address and MAC address off it (the guest has them now).
pub fn wire(w: &TapWiring) -> Result<(), VmmError> {
    let mtu = w.mtu.to_string();
    let steps: [&[&str]; 8] = [
        &["tuntap", "add", "dev", TAP, "mode", "tap"],
        &["link", "add", BRIDGE, "type", "bridge"],
        &["addr", "del", &w.address, "dev", &w.interface],
        &["link", "set", &w.interface, "address", &w.stand_in_mac],
        &["link", "set", &w.interface, "master", BRIDGE],
        &["link", "set", TAP, "master", BRIDGE],
        &["link", "set", TAP, "mtu", &mtu, "up"],
        &["link", "set", BRIDGE, "up"],
    ];
    for (n, args) in steps.iter().enumerate() {
        if let Err(e) = ip_in(&w.netns, args) {
            if n > 0 {
                unwire(w);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Puts the namespace back as CNI left it: no tap, no bridge, the
/// interface's address and default route. Best effort and repeatable: the
/// namespace may be gone already.
pub fn unwire(w: &TapWiring) {
    if !w.netns.exists() {
        return;
    }
    let _ = ip_in(&w.netns, &["link", "del", TAP]);
    let _ = ip_in(&w.netns, &["link", "del", BRIDGE]);
    let _ = ip_in(&w.netns, &["link", "set", &w.interface, "address", &w.mac]);
    let _ = ip_in(&w.netns, &["addr", "add", &w.address, "dev", &w.interface]);
    if let Some(gw) = w.gateway {
        let gw = gw.to_string();
        let _ = ip_in(
            &w.netns,
            &[
                "route",
                "add",
                "default",
                "via",
                &gw,
                "dev",
                &w.interface,
                "onlink",
            ],
        );
    }
}
