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
    /// passt (for QEMU) or pasta (for lkvm's namespace), started before the
    /// hypervisor.
    pub backend: Option<Program>,
    /// The socket passt serves, which the hypervisor connects to: waited
    /// for before the hypervisor starts.
    pub backend_socket: Option<PathBuf>,
    /// What the agent configures.
    pub guest: Option<GuestNetwork>,
    /// The namespace the hypervisor runs in; `None`: the host's.
    pub netns: Option<HypervisorNetns>,
    /// Ports the monitor relays over vsock (lkvm's user-mode network).
    pub relayed_ports: Vec<PortMapping>,
    /// A CNI namespace's interface to bridge to the VM's tap.
    pub wiring: Option<TapWiring>,
}

/// The network namespace a hypervisor runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HypervisorNetns {
    /// The pod's own, made when the pod is prepared and removed with it.
    Own(PathBuf),
    /// One a CNI plugin made and wired; the pod only borrows it.
    Cni(PathBuf),
}

impl HypervisorNetns {
    pub fn path(&self) -> &std::path::Path {
        match self {
            HypervisorNetns::Own(p) | HypervisorNetns::Cni(p) => p,
        }
    }
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
