//! The pod's network on the host: which device the VM gets, the user-mode
//! network process that serves it (passt, for QEMU), and what the agent
//! is told to configure. Published ports are checked free before anything
//! is created, so a port in use fails the pod before its VM starts.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;

use kvmpod_api::network::{mac_for_cid, GuestNetwork, Network, NetworkMode, PortMapping, Protocol};

pub use super::netplan::NetPlan;
use super::netplan::{host_nameservers, HypervisorNetns};
use super::LaunchError;
use crate::pod::PodDir;
use crate::vmm::{find_program, Hypervisor, NetDevice, Program, UserNet, VmmError};

/// passt's addresses for the guest: its own subnet, a gateway, and a DNS
/// address passt forwards to the host's resolver.
const PASST_GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const PASST_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const PASST_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// passt's default MTU (the largest 802.3 frame less its header): fewer,
/// larger frames through the emulated NIC.
const PASST_MTU: u32 = 65520;
/// kvmtool's user-mode addresses (its defaults).
const LKVM_GUEST: Ipv4Addr = Ipv4Addr::new(192, 168, 33, 15);
const LKVM_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 33, 1);

/// The unprivileged user passt runs as (Debian's nobody:nogroup); it owns
/// the directory of passt's socket.
const PASST_UID: u32 = 65534;
const PASST_GID: u32 = 65534;

/// Sets up the host side when the pod is created: passt's directory, the
/// pod's own namespace, or the wiring of a CNI namespace.
pub fn set_up(plan: &super::PodPlan) -> Result<(), LaunchError> {
    let net = &plan.net;
    let own = match &net.netns {
        Some(HypervisorNetns::Own(ns)) => Some(ns),
        _ => None,
    };
    if net.backend.is_some() || own.is_some() {
        create_passt_dir(&plan.dir)?;
    }
    if let Some(ns) = own {
        crate::vmm::netns::create(ns)?;
    }
    if let Some(w) = &net.wiring {
        crate::vmm::tapns::wire(w)?;
    }
    Ok(())
}

/// Creates the pod's passt directory, owned by passt's user.
pub fn create_passt_dir(dir: &PodDir) -> Result<(), LaunchError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let path = dir.passt_dir();
    let fail = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| LaunchError::Write { path, source }
    };
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(parent)
            .map_err(fail(parent))?;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711))
            .map_err(fail(parent))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&path)
        .map_err(fail(&path))?;
    std::os::unix::fs::chown(&path, Some(PASST_UID), Some(PASST_GID)).map_err(fail(&path))
}

/// passt: `PASST`, or on `PATH`.
pub fn passt() -> Result<PathBuf, VmmError> {
    find_program("PASST", "passt", "passt (user-mode networking)", &[])
}

/// pasta (passt's namespace mode): `PASTA`, or on `PATH`.
pub fn pasta() -> Result<PathBuf, VmmError> {
    find_program(
        "PASTA",
        "pasta",
        "pasta (user-mode networking for lkvm)",
        &[],
    )
}

/// Whether the host has an IPv4 default route (`/proc/net/route`), from
/// whose interface passt and pasta take their addresses.
pub fn host_has_default_route() -> bool {
    std::fs::read_to_string("/proc/net/route").is_ok_and(|t| default_route_in(&t))
}

fn default_route_in(table: &str) -> bool {
    table.lines().skip(1).any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.len() > 7 && cols[1] == "00000000" && cols[7] == "00000000"
    })
}

/// Checks what the host must offer the pod's network before anything is
/// created: published ports are free, a tap device or namespace exists.
pub fn check_host(net: &Network) -> Result<(), LaunchError> {
    for p in &net.ports {
        port_free(p)?;
    }
    if let Some(dev) = &net.tap {
        if !PathBuf::from("/sys/class/net").join(dev).exists() {
            return Err(LaunchError::Host(format!(
                "network tap device {dev:?} does not exist on this host (create it, e.g. `ip tuntap add {dev} mode tap`)"
            )));
        }
    }
    if let Some(ns) = &net.netns {
        super::tap::check(ns)?;
    }
    Ok(())
}

/// Whether a published port can be bound now (it is released at once; the
/// network process binds it for the pod).
fn port_free(p: &PortMapping) -> Result<(), LaunchError> {
    let addr = SocketAddr::new(p.host_ip, p.host_port);
    let result = match p.protocol {
        Protocol::Tcp => TcpListener::bind(addr).map(drop),
        Protocol::Udp => UdpSocket::bind(addr).map(drop),
    };
    result.map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::AddrInUse {
            "is in use (by another pod or program): publish another host port".to_string()
        } else {
            format!("cannot be bound: {e}")
        };
        LaunchError::Host(format!(
            "published port {p}: host port {}/{} on {} {why}",
            p.host_port,
            p.protocol.name(),
            p.host_ip
        ))
    })
}

/// The pod's network for hypervisor `hv`, with guest CID `cid` (which
/// makes its MAC address unique on the host); `helper` is passt or pasta
/// when the backend's user-mode network needs one.
pub fn plan(
    net: &Network,
    hv: &dyn Hypervisor,
    dir: &PodDir,
    cid: u32,
    helper: Option<PathBuf>,
) -> Result<NetPlan, LaunchError> {
    let mac = mac_for_cid(cid);
    match (net.mode, hv.user_net()) {
        (NetworkMode::None, _) => Ok(NetPlan::default()),
        (NetworkMode::User, UserNet::Passt) => {
            udp_replies_reach_the_host(net)?;
            if let Some(p) = net.ports.iter().find(|p| p.host_ip.is_ipv6()) {
                return Err(LaunchError::Host(format!(
                    "published port {p}: the pod's user-mode network is IPv4 only; publish on an IPv4 host address"
                )));
            }
            let program = helper
                .ok_or_else(|| LaunchError::Host("user-mode networking needs passt".into()))?;
            let socket = dir.passt_socket();
            Ok(NetPlan {
                device: Some(NetDevice::Stream {
                    socket: socket.clone(),
                    mac: mac.clone(),
                }),
                backend: Some(Program {
                    program,
                    args: passt_args(net, &socket),
                }),
                backend_socket: Some(socket),
                guest: Some(GuestNetwork {
                    mac,
                    address: PASST_GUEST,
                    prefix_len: 24,
                    gateway: Some(PASST_GATEWAY),
                    mtu: PASST_MTU,
                    nameservers: vec![PASST_DNS.into()],
                }),
                ..NetPlan::default()
            })
        }
        (NetworkMode::User, UserNet::Builtin) => builtin_plan(net, hv, dir, mac, helper),
        (NetworkMode::Tap, _) => super::tap::plan(net, mac),
    }
}

/// passt gives datagrams from the host's loopback the gateway's address,
/// and (this version) takes the guest's replies back to the host's
/// loopback only when it maps the gateway there, which it does only with
/// `host-loopback`. A UDP port published on a loopback address would take
/// datagrams and never answer: refused, with the two ways out.
fn udp_replies_reach_the_host(net: &Network) -> Result<(), LaunchError> {
    if net.host_loopback {
        return Ok(());
    }
    match net
        .ports
        .iter()
        .find(|p| p.protocol == Protocol::Udp && p.host_ip.is_loopback())
    {
        Some(p) => Err(LaunchError::Host(format!(
            "published port {p}: replies to UDP from the host's loopback reach it only through the gateway's mapping to the host's loopback; publish on another host address (0.0.0.0:{}:{}/udp) or allow it with --net user,host-loopback",
            p.host_port, p.guest_port
        ))),
        None => Ok(()),
    }
}

/// lkvm's user-mode network. Its stack takes the guest's connections to
/// its gateway to 127.0.0.1 of the namespace lkvm runs in; in a namespace
/// of the pod's own that loopback is empty, and pasta connects the
/// namespace to the host's network without mapping its gateway to the
/// host's loopback. The stack takes no connections from the host, so the
/// monitor relays published (TCP) ports over vsock.
fn builtin_plan(
    net: &Network,
    hv: &dyn Hypervisor,
    dir: &PodDir,
    mac: String,
    helper: Option<PathBuf>,
) -> Result<NetPlan, LaunchError> {
    if let Some(p) = net.ports.iter().find(|p| p.protocol != Protocol::Tcp) {
        return Err(LaunchError::Host(format!(
            "published port {p}: {}'s user-mode network takes no connections from the host, and kvmpod relays only TCP to it over vsock; use QEMU (--hypervisor qemu) for UDP",
            hv.display_name()
        )));
    }
    // Without pasta (a host with no external network) the namespace is
    // still the pod's own: no outbound connections, and still no way to
    // the host's loopback.
    let (netns, backend) = if net.host_loopback {
        (None, None)
    } else {
        let ns = dir.netns_file();
        let backend = helper.map(|pasta| Program {
            program: pasta,
            args: pasta_args(&ns),
        });
        (Some(ns), backend)
    };
    Ok(NetPlan {
        device: Some(NetDevice::Builtin {
            mac: mac.clone(),
            guest_ip: LKVM_GUEST,
            host_ip: LKVM_HOST,
        }),
        backend,
        guest: Some(GuestNetwork {
            mac,
            address: LKVM_GUEST,
            prefix_len: 24,
            gateway: Some(LKVM_HOST),
            mtu: 1500,
            nameservers: host_nameservers(),
        }),
        netns: netns.map(HypervisorNetns::Own),
        relayed_ports: net.ports.clone(),
        ..NetPlan::default()
    })
}

/// pasta's command line: it joins namespace `ns` (made for the pod) and
/// gives it the host's network for outbound connections only: no ports
/// forwarded either way, and its gateway not mapped to the host's
/// loopback. It ends when the namespace file is removed.
fn pasta_args(ns: &std::path::Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "--foreground",
        "--quiet",
        "--ipv4-only",
        "--config-net",
        "--no-map-gw",
        "--runas",
    ]
    .map(String::from)
    .into();
    a.push(format!("{PASST_UID}:{PASST_GID}"));
    for opt in ["-t", "-u", "-T", "-U"] {
        a.push(opt.into());
        a.push("none".into());
    }
    a.push("--netns".into());
    a.push(ns.to_string_lossy().into_owned());
    a
}

/// passt's command line: in the foreground, for one VM (it exits when the
/// VM disconnects), IPv4, with the guest's fixed addresses and the
/// published ports. `--no-map-gw` keeps the guest from the host's
/// loopback unless the pod asked for it.
fn passt_args(net: &Network, socket: &std::path::Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "--foreground",
        "--quiet",
        "--one-off",
        "--ipv4-only",
        "--socket",
    ]
    .map(String::from)
    .into();
    a.push(socket.to_string_lossy().into_owned());
    a.push("--runas".into());
    a.push(format!("{PASST_UID}:{PASST_GID}"));
    for (opt, value) in [
        ("--address", PASST_GUEST.to_string()),
        ("--netmask", "24".to_string()),
        ("--gateway", PASST_GATEWAY.to_string()),
        ("--dns-forward", PASST_DNS.to_string()),
        ("--mtu", PASST_MTU.to_string()),
    ] {
        a.push(opt.into());
        a.push(value);
    }
    if !net.host_loopback {
        a.push("--no-map-gw".into());
    }
    for p in &net.ports {
        a.push(match p.protocol {
            Protocol::Tcp => "-t".into(),
            Protocol::Udp => "-u".into(),
        });
        a.push(format!("{}/{}:{}", p.host_ip, p.host_port, p.guest_port));
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passt_publishes_ports_and_hides_host_loopback_by_default() {
        let mut net: Network = "user".parse().unwrap();
        net.ports = vec![
            "8080:80".parse().unwrap(),
            "0.0.0.0:5353:53/udp".parse().unwrap(),
        ];
        let a = passt_args(&net, std::path::Path::new("/p/passt.sock"));
        assert!(
            a.windows(2).any(|w| w == ["-t", "127.0.0.1/8080:80"]),
            "{a:?}"
        );
        assert!(
            a.windows(2).any(|w| w == ["-u", "0.0.0.0/5353:53"]),
            "{a:?}"
        );
        assert!(a.contains(&"--no-map-gw".to_string()));
        assert!(a.windows(2).any(|w| w == ["--socket", "/p/passt.sock"]));
        net.host_loopback = true;
        assert!(!passt_args(&net, std::path::Path::new("/p")).contains(&"--no-map-gw".to_string()));
    }

    #[test]
    fn default_routes_are_found() {
        let with = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
            eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\n\
            eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        assert!(default_route_in(with));
        let without = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
            eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        assert!(!default_route_in(without));
        assert!(!default_route_in(""));
    }

    #[test]
    fn a_port_in_use_is_refused_with_its_name() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let p: PortMapping = format!("{port}:80").parse().unwrap();
        let e = port_free(&p).unwrap_err().to_string();
        assert!(
            e.contains(&format!("host port {port}/tcp on 127.0.0.1 is in use")),
            "{e}"
        );
        drop(held);
        port_free(&p).unwrap();
    }
}
