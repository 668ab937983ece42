//! A pod's network: what the manifest asks for ([`Network`]: a mode and
//! published ports) and what the host tells the agent to configure
//! ([`GuestNetwork`]: one interface, found by its MAC address).
//!
//! All apps of a pod share its one network, as the containers of a
//! Kubernetes pod do.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How the pod's VM is connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Loopback only; the host reaches apps with `port-forward` (vsock).
    None,
    /// Unprivileged user-mode networking (passt for QEMU, lkvm's own
    /// stack): outbound connections and published ports.
    #[default]
    User,
    /// A tap device: one the host made (`tap`), or one host-ctl makes in a
    /// network namespace that CNI plugins wired (`netns`).
    Tap,
}

impl NetworkMode {
    pub fn name(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::User => "user",
            NetworkMode::Tap => "tap",
        }
    }
}

/// The manifest's `network`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    #[serde(default)]
    pub mode: NetworkMode,
    /// `user` mode: let the guest reach the host's loopback services
    /// through its gateway address. Off by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_loopback: bool,
    /// `tap` mode: an existing tap device on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    /// `tap` mode: a network namespace (a path such as
    /// `/run/netns/pod1`) whose one interface (CNI's) the pod takes over:
    /// the VM runs in it, and the guest gets the interface's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    /// `tap` mode with a device: the guest's address and prefix
    /// (`10.0.0.2/24`); a namespace's interface brings its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `tap` mode with a device: the guest's default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Host ports forwarded to the guest (`user` mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
}

impl Network {
    pub fn is_default(&self) -> bool {
        *self == Network::default()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// The address published ports bind to unless one is given: the host's
/// own loopback, so that nothing is exposed to the network by accident.
pub const DEFAULT_HOST_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// One published port: `[HOSTIP:]HOSTPORT:GUESTPORT[/tcp|udp]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMapping {
    #[serde(default = "default_host_ip")]
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub guest_port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

fn default_host_ip() -> IpAddr {
    DEFAULT_HOST_IP
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            IpAddr::V6(ip) => write!(f, "[{ip}]")?,
            IpAddr::V4(ip) => write!(f, "{ip}")?,
        }
        write!(
            f,
            ":{}->{}/{}",
            self.host_port,
            self.guest_port,
            self.protocol.name()
        )
    }
}

/// Why a `-p` or `--net` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?}: {why}")]
pub struct SpecError {
    pub value: String,
    pub why: String,
}

fn spec_error(value: &str, why: impl Into<String>) -> SpecError {
    SpecError {
        value: value.to_string(),
        why: why.into(),
    }
}

fn port(value: &str, s: &str, what: &str) -> Result<u16, SpecError> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(spec_error(
            value,
            format!("{what} {s:?} is not a port (1 to 65535)"),
        )),
    }
}

impl FromStr for PortMapping {
    type Err = SpecError;

    /// Docker's `-p` syntax, without ranges; an IPv6 host address is
    /// written in brackets (`[::1]:8080:80`).
    fn from_str(value: &str) -> Result<Self, SpecError> {
        let (ports, protocol) = match value.rsplit_once('/') {
            Some((p, "tcp")) => (p, Protocol::Tcp),
            Some((p, "udp")) => (p, Protocol::Udp),
            Some((_, other)) => {
                return Err(spec_error(
                    value,
                    format!("unknown protocol {other:?} (tcp or udp)"),
                ))
            }
            None => (value, Protocol::Tcp),
        };
        let (host_ip, rest) = if let Some(v6) = ports.strip_prefix('[') {
            let (ip, rest) = v6
                .split_once("]:")
                .ok_or_else(|| spec_error(value, "an IPv6 address in [] must be followed by :"))?;
            (Some(ip), rest)
        } else {
            match ports.matches(':').count() {
                2 => {
                    let (ip, rest) = ports.split_once(':').unwrap_or_default();
                    (Some(ip), rest)
                }
                1 => (None, ports),
                _ => {
                    return Err(spec_error(
                        value,
                        "expected [HOSTIP:]HOSTPORT:GUESTPORT[/tcp|udp]",
                    ))
                }
            }
        };
        let host_ip = match host_ip {
            None | Some("") => DEFAULT_HOST_IP,
            Some(ip) => ip
                .parse()
                .map_err(|_| spec_error(value, format!("{ip:?} is not an IP address")))?,
        };
        let (host, guest) = rest
            .split_once(':')
            .ok_or_else(|| spec_error(value, "expected [HOSTIP:]HOSTPORT:GUESTPORT[/tcp|udp]"))?;
        Ok(PortMapping {
            host_ip,
            host_port: port(value, host, "host port")?,
            guest_port: port(value, guest, "guest port")?,
            protocol,
        })
    }
}

impl FromStr for Network {
    type Err = SpecError;

    /// `--net`: `none`, `user[,host-loopback]`,
    /// `tap=DEVICE,address=A/P[,gateway=G]` or `tap,netns=PATH`.
    fn from_str(value: &str) -> Result<Self, SpecError> {
        let mut parts = value.split(',');
        let head = parts.next().unwrap_or_default();
        let (mode, tap) = match head.split_once('=') {
            Some(("tap", dev)) if !dev.is_empty() => (NetworkMode::Tap, Some(dev.to_string())),
            Some(_) => return Err(spec_error(value, "only tap takes a value (tap=DEVICE)")),
            None => match head {
                "none" => (NetworkMode::None, None),
                "user" => (NetworkMode::User, None),
                "tap" => (NetworkMode::Tap, None),
                _ => {
                    return Err(spec_error(
                        value,
                        "expected none, user[,host-loopback], tap=DEVICE or tap,netns=PATH",
                    ))
                }
            },
        };
        let mut net = Network {
            mode,
            tap,
            ..Network::default()
        };
        for option in parts {
            match (mode, option.split_once('=')) {
                (NetworkMode::User, None) if option == "host-loopback" => net.host_loopback = true,
                (NetworkMode::Tap, Some(("netns", path))) if !path.is_empty() => {
                    net.netns = Some(PathBuf::from(path))
                }
                (NetworkMode::Tap, Some(("address", a))) if !a.is_empty() => {
                    net.address = Some(a.to_string())
                }
                (NetworkMode::Tap, Some(("gateway", g))) => {
                    net.gateway = Some(g.parse().map_err(|_| {
                        spec_error(value, format!("gateway {g:?} is not an IPv4 address"))
                    })?)
                }
                _ => {
                    return Err(spec_error(
                        value,
                        format!("{option:?} is not an option of {} mode", mode.name()),
                    ))
                }
            }
        }
        Ok(net)
    }
}

/// What the agent configures in the guest: the one interface the host
/// gave the VM, found by its MAC address. The guest runs no DHCP client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestNetwork {
    /// The interface's MAC address, `52:54:00:..`.
    pub mac: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u32,
    /// The pod's `/etc/resolv.conf` nameservers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<IpAddr>,
}

/// An IPv4 address with its prefix length, from `10.0.0.2/24`.
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, p) = s.split_once('/')?;
    let p: u8 = p.parse().ok()?;
    (p <= 32).then_some(())?;
    Some((a.parse().ok()?, p))
}

/// A MAC address as bytes, from `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for byte in out.iter_mut() {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// A locally administered unicast MAC address derived from a pod's guest
/// CID: distinct for every pod running on a host.
pub fn mac_for_cid(cid: u32) -> String {
    let b = cid.to_be_bytes();
    format!("52:54:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs_parse_as_docker_writes_them() {
        let p: PortMapping = "8080:80".parse().unwrap();
        assert_eq!(p.host_ip, DEFAULT_HOST_IP);
        assert_eq!(
            (p.host_port, p.guest_port, p.protocol),
            (8080, 80, Protocol::Tcp)
        );
        let p: PortMapping = "0.0.0.0:5353:53/udp".parse().unwrap();
        assert_eq!(p.host_ip, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(p.protocol, Protocol::Udp);
        let p: PortMapping = "[::1]:8443:443/tcp".parse().unwrap();
        assert_eq!(p.host_ip, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(p.to_string(), "[::1]:8443->443/tcp");
        for bad in [
            "80",
            "0:80",
            "8080:70000",
            "a:80",
            "1.2.3:80:80",
            "80:80/sctp",
            "[::1]80:80",
        ] {
            assert!(bad.parse::<PortMapping>().is_err(), "{bad}");
        }
    }

    #[test]
    fn net_specs_parse() {
        assert_eq!("none".parse::<Network>().unwrap().mode, NetworkMode::None);
        let n: Network = "user,host-loopback".parse().unwrap();
        assert!(n.host_loopback);
        let n: Network = "tap=tap7".parse().unwrap();
        assert_eq!(n.tap.as_deref(), Some("tap7"));
        let n: Network = "tap,netns=/run/netns/a".parse().unwrap();
        assert_eq!(n.netns, Some(PathBuf::from("/run/netns/a")));
        for bad in [
            "bridge",
            "none,host-loopback",
            "user=x",
            "tap,host-loopback",
            "tap,netns=",
        ] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
    }

    #[test]
    fn macs_round_trip() {
        let mac = mac_for_cid(0x0102_0304);
        assert_eq!(mac, "52:54:01:02:03:04");
        assert_eq!(parse_mac(&mac), Some([0x52, 0x54, 1, 2, 3, 4]));
        assert_eq!(parse_mac("52:54:00"), None);
        assert_eq!(parse_mac("52:54:00:00:00:00:00"), None);
    }
}
