//! The guest's network: loopback always, and the one interface the host
//! gave the VM, configured over rtnetlink from the host's plan (there is
//! no `ip` binary and no DHCP client in the guest). All apps share it.

mod counters;
mod netlink;

use kvmpod_api::network::{parse_mac, GuestNetwork};

pub use counters::{counters, Counters};
use netlink::Rtnl;

/// Why the guest's network could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{what}: the kernel said {errno}")]
    Kernel {
        what: String,
        errno: nix::errno::Errno,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Whether `b` is in `a`'s subnet of `prefix_len` bits.
fn same_subnet(a: std::net::Ipv4Addr, b: std::net::Ipv4Addr, prefix_len: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
}

/// The kernel gives the loopback device this index in every network
/// namespace (`LOOPBACK_IFINDEX`), so it needs no lookup.
const LOOPBACK_INDEX: u32 = 1;

/// The guest's network, configured over one rtnetlink socket.
pub struct GuestNet(Rtnl);

impl GuestNet {
    pub fn open() -> Result<Self, NetError> {
        Rtnl::open().map(GuestNet)
    }

    /// Brings `lo` up; the kernel gives it 127.0.0.1/8 and ::1.
    pub fn loopback_up(&self) -> Result<(), NetError> {
        self.0.set_up(LOOPBACK_INDEX, None, "lo")
    }

    /// Configures the pod's interface: MTU and up, its address, and the
    /// default route through the gateway. Returns the interface's name.
    pub fn configure(&self, net: &GuestNetwork) -> Result<String, NetError> {
        let mac = parse_mac(&net.mac)
            .ok_or_else(|| NetError::Invalid(format!("{:?} is not a MAC address", net.mac)))?;
        let rtnl = &self.0;
        let link = rtnl.link_by_mac(&mac)?.ok_or_else(|| {
            NetError::Invalid(format!(
                "no interface with MAC address {} (is virtio_net loaded?)",
                net.mac
            ))
        })?;
        rtnl.set_up(link.index, Some(net.mtu), &link.name)?;
        rtnl.add_address(link.index, net.address, net.prefix_len, &link.name)?;
        if let Some(gw) = net.gateway {
            let onlink = !same_subnet(net.address, gw, net.prefix_len);
            rtnl.add_default_route(link.index, gw, onlink, &link.name)?;
        }
        Ok(link.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateways_outside_the_subnet_are_told_apart() {
        let a = "10.0.2.15".parse().unwrap();
        assert!(same_subnet(a, "10.0.2.2".parse().unwrap(), 24));
        assert!(!same_subnet(a, "169.254.1.1".parse().unwrap(), 24));
        assert!(!same_subnet(a, "10.0.2.2".parse().unwrap(), 32));
        assert!(same_subnet(a, "192.168.0.1".parse().unwrap(), 0));
    }
}
