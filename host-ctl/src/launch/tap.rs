//! Tap networking: the VM's interface is a tap device. Either the host
//! made it (`tap=DEVICE`, with the guest's address in the manifest), or it
//! lives in a network namespace a CNI plugin wired (`tap,netns=PATH`), as
//! Kata's VMs do: the plan reads the namespace's interface (its address
//! goes to the guest), `prepare` wires a tap to it (`vmm::tapns`), the
//! hypervisor runs in the namespace, and the pod's release unwires it.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::Path;

use kvmpod_api::network::{parse_cidr, GuestNetwork, Network};
use serde::Deserialize;

use super::netplan::{host_nameservers, HypervisorNetns, NetPlan};
use super::LaunchError;
use crate::vmm::tapns::{self, TapWiring};
use crate::vmm::NetDevice;

fn host_err(what: impl Into<String>) -> LaunchError {
    LaunchError::Host(what.into())
}

/// The plan of a tap pod.
pub fn plan(net: &Network, mac: String) -> Result<NetPlan, LaunchError> {
    if let Some(device) = &net.tap {
        let (address, prefix_len) = net
            .address
            .as_deref()
            .and_then(parse_cidr)
            .ok_or_else(|| host_err("a tap device needs the guest's address"))?;
        return Ok(NetPlan {
            device: Some(NetDevice::Tap {
                device: device.clone(),
                mac: mac.clone(),
            }),
            guest: Some(GuestNetwork {
                mac,
                address,
                prefix_len,
                gateway: net.gateway,
                mtu: 1500,
                nameservers: host_nameservers(),
            }),
            ..NetPlan::default()
        });
    }
    let ns = net
        .netns
        .as_deref()
        .ok_or_else(|| host_err("tap mode needs a device or a namespace"))?;
    let found = read_namespace(ns)?;
    // The guest takes the interface's MAC address with its IP address:
    // the node's neighbour tables already name that pair.
    let wiring = TapWiring {
        netns: ns.to_path_buf(),
        interface: found.interface.clone(),
        address: format!("{}/{}", found.address, found.prefix_len),
        gateway: found.gateway,
        mtu: found.mtu,
        mac: found.mac.clone(),
        stand_in_mac: mac,
    };
    Ok(NetPlan {
        device: Some(NetDevice::Tap {
            device: tapns::TAP.into(),
            mac: found.mac.clone(),
        }),
        wiring: Some(wiring),
        guest: Some(GuestNetwork {
            mac: found.mac,
            address: found.address,
            prefix_len: found.prefix_len,
            gateway: found.gateway,
            mtu: found.mtu,
            nameservers: host_nameservers(),
        }),
        netns: Some(HypervisorNetns::Cni(ns.to_path_buf())),
        ..NetPlan::default()
    })
}

/// The namespace's one configured interface, as CNI left it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    interface: String,
    address: Ipv4Addr,
    prefix_len: u8,
    gateway: Option<Ipv4Addr>,
    mtu: u32,
    mac: String,
}

#[derive(Deserialize)]
struct IpLink {
    ifname: String,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    address: String,
    #[serde(default)]
    addr_info: Vec<IpAddrInfo>,
}

#[derive(Deserialize)]
struct IpAddrInfo {
    family: String,
    local: String,
    prefixlen: u8,
}

#[derive(Deserialize)]
struct IpRoute {
    #[serde(default)]
    gateway: Option<String>,
}

fn read_namespace(ns: &Path) -> Result<Found, LaunchError> {
    // Not `-4`: that leaves out the link's MAC address.
    let links = tapns::ip_in(ns, &["-j", "addr", "show"])?;
    let routes = tapns::ip_in(ns, &["-j", "-4", "route", "show", "default"])?;
    parse_namespace(&links, &routes)
        .map_err(|why| host_err(format!("network namespace {}: {why}", ns.display())))
}

fn parse_namespace(links: &str, routes: &str) -> Result<Found, String> {
    let links: Vec<IpLink> =
        serde_json::from_str(links).map_err(|e| format!("unreadable `ip -j addr`: {e}"))?;
    let routes: Vec<IpRoute> =
        serde_json::from_str(routes).map_err(|e| format!("unreadable `ip -j route`: {e}"))?;
    let mut configured = links
        .into_iter()
        .filter(|l| l.ifname != "lo")
        .filter_map(|l| {
            let a = l.addr_info.iter().find(|a| a.family == "inet")?;
            Some(Found {
                address: a.local.parse().ok()?,
                prefix_len: a.prefixlen,
                interface: l.ifname.clone(),
                gateway: None,
                mtu: if l.mtu == 0 { 1500 } else { l.mtu },
                mac: l.address.clone(),
            })
        });
    let mut found = configured
        .next()
        .ok_or("it has no interface with an IPv4 address (did the CNI plugin run?)")?;
    if configured.next().is_some() {
        return Err(
            "it has more than one interface with an address; kvmpod takes over exactly one".into(),
        );
    }
    found.gateway = routes
        .iter()
        .find_map(|r| r.gateway.as_deref()?.parse().ok());
    Ok(found)
}

/// Checks that `ns` is a network namespace file host-ctl can enter.
pub fn check(ns: &Path) -> Result<(), LaunchError> {
    File::open(ns)
        .map(drop)
        .map_err(|e| host_err(format!("network namespace {}: {e}", ns.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINKS: &str = r#"[{"ifindex":1,"ifname":"lo","mtu":65536,"addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
        {"ifindex":3,"ifname":"eth0","mtu":1450,"address":"0a:58:0a:58:00:05","addr_info":[{"family":"inet","local":"10.88.0.5","prefixlen":16}]}]"#;

    #[test]
    fn a_cni_namespace_is_read() {
        let f = parse_namespace(
            LINKS,
            r#"[{"dst":"default","gateway":"10.88.0.1","dev":"eth0"}]"#,
        )
        .unwrap();
        assert_eq!(f.interface, "eth0");
        assert_eq!(
            (f.address, f.prefix_len, f.mtu),
            ("10.88.0.5".parse().unwrap(), 16, 1450)
        );
        assert_eq!(f.gateway, Some("10.88.0.1".parse().unwrap()));
        assert_eq!(f.mac, "0a:58:0a:58:00:05");
        let f = parse_namespace(LINKS, "[]").unwrap();
        assert_eq!(f.gateway, None);
    }

    #[test]
    fn an_unwired_namespace_is_refused() {
        let e =
            parse_namespace(r#"[{"ifname":"lo","mtu":65536,"addr_info":[]}]"#, "[]").unwrap_err();
        assert!(e.contains("did the CNI plugin run"), "{e}");
    }
}
