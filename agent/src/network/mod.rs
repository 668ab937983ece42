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

/// Brings `lo` up; the kernel gives it 127.0.0.1/8 and ::1.
pub fn loopback_up() -> Result<(), NetError> {
    let rtnl = Rtnl::open()?;
    let lo = rtnl
        .link_by_name("lo")?
        .ok_or_else(|| NetError::Invalid("the guest has no lo interface".into()))?;
    rtnl.set_up(lo.index, None, "lo")
}

/// Configures the pod's interface: MTU and up, its address, and the
/// default route through the gateway. Returns the interface's name.
pub fn configure(net: &GuestNetwork) -> Result<String, NetError> {
    let mac = parse_mac(&net.mac)
        .ok_or_else(|| NetError::Invalid(format!("{:?} is not a MAC address", net.mac)))?;
    let rtnl = Rtnl::open()?;
    let link = rtnl.link_by_mac(&mac)?.ok_or_else(|| {
        NetError::Invalid(format!(
            "no interface with MAC address {} (is virtio_net loaded?)",
            net.mac
        ))
    })?;
    rtnl.set_up(link.index, Some(net.mtu), &link.name)?;
    rtnl.add_address(link.index, net.address, net.prefix_len, &link.name)?;
    if let Some(gw) = net.gateway {
        rtnl.add_default_route(link.index, gw, &link.name)?;
    }
    Ok(link.name)
}
