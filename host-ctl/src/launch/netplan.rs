//! The network side of a pod's plan, as plain data: what `network` and
//! `tap` work out and `prepare` sets up; and the host's resolvers, which a
//! guest is told.

use std::path::PathBuf;

use kvmpod_api::network::{GuestNetwork, PortMapping};

use crate::vmm::tapns::TapWiring;
use crate::vmm::{NetDevice, Program};

/// The network side of a pod's plan.
#[derive(Debug, Clone, Default)]
pub struct NetPlan {
    pub device: Option<NetDevice>,
    /// passt, started before the hypervisor, which connects to it.
    pub backend: Option<Program>,
    /// What the agent configures.
    pub guest: Option<GuestNetwork>,
    /// The namespace the hypervisor runs in: its own, made at prepare
    /// (`own_netns`), or the one a CNI plugin wired.
    pub netns: Option<PathBuf>,
    pub own_netns: bool,
    /// Ports the monitor relays over vsock (lkvm's user-mode network).
    pub relayed_ports: Vec<PortMapping>,
    /// A CNI namespace's interface to bridge to the VM's tap.
    pub wiring: Option<TapWiring>,
}

/// The host's nameservers that a guest can reach (not its loopback).
pub fn host_nameservers() -> Vec<std::net::IpAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|t| nameservers_in(&t))
        .unwrap_or_default()
}

fn nameservers_in(text: &str) -> Vec<std::net::IpAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ns| ns.trim().parse::<std::net::IpAddr>().ok())
        .filter(|ip| !ip.is_loopback())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_nameservers_are_left_out() {
        let ns = nameservers_in("# x\nnameserver 127.0.0.53\nnameserver 10.1.2.3\nsearch a\n");
        assert_eq!(ns, vec!["10.1.2.3".parse::<std::net::IpAddr>().unwrap()]);
    }
}
