//! A blocking rtnetlink socket and the four requests the guest makes: list
//! links, bring one up (with an MTU), add an address, add a default route.
//!
//! Written out rather than taken from `netlink-packet-route`: with that
//! crate the static agent was 1,646,816 bytes, written out it is 1,347,808
//! (1,278,176 before the guest had a network; `cargo build --profile agent
//! --target x86_64-unknown-linux-musl`), and every byte of PID 1 is in
//! every initramfs. These messages are a few fixed headers and attributes
//! (rtnetlink(7)).

use std::net::Ipv4Addr;

use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};
use std::os::fd::{AsRawFd, OwnedFd};

use super::NetError;

// From linux/netlink.h and linux/rtnetlink.h.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;
const RTNH_F_ONLINK: u32 = 4;
const IFF_UP: u32 = 0x1;
const AF_INET: u8 = 2;
const NLMSG_HDRLEN: usize = 16;

/// A link as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// One request: a netlink header, a fixed family header, attributes.
struct Request(Vec<u8>);

impl Request {
    fn new(kind: u16, flags: u16, seq: u32, family_header: &[u8]) -> Self {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `bytes`
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel fills it
        b.extend_from_slice(family_header);
        b.resize(align(b.len()), 0);
        Request(b)
    }

    fn attr(mut self, kind: u16, value: &[u8]) -> Self {
        let len = 4 + value.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(align(self.0.len()), 0);
        self
    }

    fn bytes(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// `struct ifinfomsg`: family, type, index, flags, change mask.
fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The messages in a datagram: (type, sequence, payload).
fn messages(b: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len = u32_at(b, at)? as usize;
        if len < NLMSG_HDRLEN || at + len > b.len() {
            return None;
        }
        let kind = u16_at(b, at + 4)?;
        let seq = u32_at(b, at + 8)?;
        let payload = &b[at + NLMSG_HDRLEN..at + len];
        at += align(len);
        Some((kind, seq, payload))
    })
}

/// The attributes after a fixed header of `skip` bytes: (type, value).
fn attributes(b: &[u8], skip: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = align(skip);
    std::iter::from_fn(move || {
        let len = u16_at(b, at)? as usize;
        if len < 4 || at + len > b.len() {
            return None;
        }
        let kind = u16_at(b, at + 2)? & 0x3fff;
        let value = &b[at + 4..at + len];
        at += align(len);
        Some((kind, value))
    })
}

/// A link from an RTM_NEWLINK payload.
fn parse_link(payload: &[u8]) -> Option<Link> {
    let index = u32_at(payload, 4)?;
    let mut link = Link {
        index,
        name: String::new(),
        mac: Vec::new(),
    };
    for (kind, value) in attributes(payload, 16) {
        match kind {
            IFLA_IFNAME => {
                let name = value.split(|&c| c == 0).next().unwrap_or_default();
                link.name = String::from_utf8_lossy(name).into_owned();
            }
            IFLA_ADDRESS => link.mac = value.to_vec(),
            _ => {}
        }
    }
    Some(link)
}

pub(super) struct Rtnl {
    fd: OwnedFd,
    seq: std::cell::Cell<u32>,
}

fn io(what: &str) -> impl FnOnce(nix::errno::Errno) -> NetError + '_ {
    move |errno| NetError::Kernel {
        what: what.to_string(),
        errno,
    }
}

impl Rtnl {
    pub fn open() -> Result<Self, NetError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(io("opening an rtnetlink socket"))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))
            .map_err(io("binding the rtnetlink socket"))?;
        Ok(Rtnl {
            fd,
            seq: std::cell::Cell::new(0),
        })
    }

    fn next_seq(&self) -> u32 {
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        seq
    }

    /// Sends one request; collects the replies until the kernel's
    /// acknowledgement (or the end of a dump). A refusal is an error.
    fn request(&self, req: Vec<u8>, seq: u32, what: &str) -> Result<Vec<Vec<u8>>, NetError> {
        send(self.fd.as_raw_fd(), &req, MsgFlags::empty()).map_err(io(what))?;
        let mut replies = Vec::new();
        let mut rx = vec![0u8; 32 * 1024];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut rx, MsgFlags::empty()).map_err(io(what))?;
            if n == 0 {
                return Err(NetError::Invalid(format!(
                    "{what}: the kernel closed the socket"
                )));
            }
            for (kind, got, payload) in messages(&rx[..n]) {
                if got != seq {
                    continue;
                }
                match kind {
                    // A dump that failed ends with its (negative) errno.
                    NLMSG_DONE => {
                        return match u32_at(payload, 0).map_or(0, |c| c as i32) {
                            c if c < 0 => Err(NetError::Kernel {
                                what: what.to_string(),
                                errno: nix::errno::Errno::from_raw(-c),
                            }),
                            _ => Ok(replies),
                        }
                    }
                    NLMSG_ERROR => {
                        let code = u32_at(payload, 0).map_or(0, |c| c as i32);
                        return match code {
                            0 => Ok(replies),
                            c => Err(NetError::Kernel {
                                what: what.to_string(),
                                errno: nix::errno::Errno::from_raw(-c),
                            }),
                        };
                    }
                    _ => replies.push(payload.to_vec()),
                }
            }
        }
    }

    fn links(&self) -> Result<Vec<Link>, NetError> {
        let seq = self.next_seq();
        let req = Request::new(RTM_GETLINK, NLM_F_DUMP, seq, &ifinfomsg(0, 0, 0)).bytes();
        let replies = self.request(req, seq, "listing the network interfaces")?;
        Ok(replies.iter().filter_map(|p| parse_link(p)).collect())
    }

    pub fn link_by_mac(&self, mac: &[u8; 6]) -> Result<Option<Link>, NetError> {
        Ok(self.links()?.into_iter().find(|l| l.mac == mac))
    }

    /// Sets the link up, and its MTU when given.
    pub fn set_up(&self, index: u32, mtu: Option<u32>, name: &str) -> Result<(), NetError> {
        let seq = self.next_seq();
        let mut req = Request::new(
            RTM_NEWLINK,
            NLM_F_ACK,
            seq,
            &ifinfomsg(index, IFF_UP, IFF_UP),
        );
        if let Some(mtu) = mtu {
            req = req.attr(IFLA_MTU, &mtu.to_ne_bytes());
        }
        self.request(req.bytes(), seq, &format!("bringing {name} up"))
            .map(drop)
    }

    pub fn add_address(
        &self,
        index: u32,
        address: Ipv4Addr,
        prefix_len: u8,
        name: &str,
    ) -> Result<(), NetError> {
        let seq = self.next_seq();
        let what = format!("adding {address}/{prefix_len} to {name}");
        self.request(req_add_address(seq, index, address, prefix_len), seq, &what)
            .map(drop)
    }

    /// `onlink`: the gateway is outside the interface's subnet (a /32
    /// address with a link-local gateway, as some CNI plugins give), and
    /// is reached on the link all the same.
    pub fn add_default_route(
        &self,
        index: u32,
        gateway: Ipv4Addr,
        onlink: bool,
        name: &str,
    ) -> Result<(), NetError> {
        let seq = self.next_seq();
        let what = format!("adding the default route via {gateway} on {name}");
        self.request(req_default_route(seq, index, gateway, onlink), seq, &what)
            .map(drop)
    }
}

fn req_add_address(seq: u32, index: u32, address: Ipv4Addr, prefix_len: u8) -> Vec<u8> {
    // struct ifaddrmsg: family, prefix length, flags, scope, index.
    let mut h = [0u8; 8];
    h[0] = AF_INET;
    h[1] = prefix_len;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    let req = Request::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq, &h)
        .attr(IFA_LOCAL, &address.octets())
        .attr(IFA_ADDRESS, &address.octets());
    // A /31 or /32 has no broadcast address (RFC 3021): the other address
    // of a /31 is the peer, often the gateway.
    if prefix_len >= 31 {
        return req.bytes();
    }
    req.attr(IFA_BROADCAST, &broadcast(address, prefix_len).octets())
        .bytes()
}

fn req_default_route(seq: u32, index: u32, gateway: Ipv4Addr, onlink: bool) -> Vec<u8> {
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope,
    // type, flags.
    let mut h = [0u8; 12];
    h[..8].copy_from_slice(&[
        AF_INET,
        0,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_BOOT,
        RT_SCOPE_UNIVERSE,
        RTN_UNICAST,
    ]);
    if onlink {
        h[8..12].copy_from_slice(&RTNH_F_ONLINK.to_ne_bytes());
    }
    Request::new(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq, &h)
        .attr(RTA_GATEWAY, &gateway.octets())
        .attr(RTA_OIF, &index.to_ne_bytes())
        .bytes()
}

/// The subnet's broadcast address, which `ip addr add ... brd +` sets.
fn broadcast(address: Ipv4Addr, prefix_len: u8) -> Ipv4Addr {
    let host_bits = 32u32.saturating_sub(u32::from(prefix_len));
    let mask = if host_bits >= 32 {
        u32::MAX
    } else {
        (1u32 << host_bits) - 1
    };
    Ipv4Addr::from(u32::from(address) | mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_addresses() {
        let a = Ipv4Addr::new(10, 0, 2, 15);
        assert_eq!(broadcast(a, 24), Ipv4Addr::new(10, 0, 2, 255));
        assert_eq!(broadcast(a, 32), a);
        assert_eq!(broadcast(a, 0), Ipv4Addr::BROADCAST);
    }

    #[test]
    fn requests_are_laid_out_as_rtnetlink_wants() {
        let r = req_add_address(7, 2, Ipv4Addr::new(10, 0, 2, 15), 24);
        // 16 header + 8 ifaddrmsg + 3 attributes of 8.
        assert_eq!(r.len(), 48);
        assert_eq!(u32_at(&r, 0), Some(48));
        assert_eq!(u16_at(&r, 4), Some(RTM_NEWADDR));
        assert_eq!(
            u16_at(&r, 6),
            Some(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
        );
        assert_eq!(u32_at(&r, 8), Some(7));
        assert_eq!(&r[16..18], &[AF_INET, 24]);
        assert_eq!(u32_at(&r, 20), Some(2));
        let attrs: Vec<(u16, Vec<u8>)> = attributes(&r[16..], 8)
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
        assert_eq!(
            attrs,
            vec![
                (IFA_LOCAL, vec![10, 0, 2, 15]),
                (IFA_ADDRESS, vec![10, 0, 2, 15]),
                (IFA_BROADCAST, vec![10, 0, 2, 255])
            ]
        );
        let r = req_default_route(8, 3, Ipv4Addr::new(10, 0, 2, 2), false);
        assert_eq!(r.len(), 16 + 12 + 8 + 8);
        assert_eq!(r[16 + 4], RT_TABLE_MAIN);
        assert_eq!(u32_at(&r, 16 + 8), Some(0));
        let r = req_default_route(8, 3, Ipv4Addr::new(169, 254, 1, 1), true);
        assert_eq!(u32_at(&r, 16 + 8), Some(RTNH_F_ONLINK));
        // A /32 gets no broadcast address.
        let r = req_add_address(9, 2, Ipv4Addr::new(10, 1, 2, 3), 32);
        assert_eq!(r.len(), 16 + 8 + 8 + 8);
    }

    #[test]
    fn a_link_dump_is_read() {
        // One RTM_NEWLINK with a name (padded) and a MAC, then DONE.
        let mut b = Request::new(RTM_NEWLINK, 0, 5, &ifinfomsg(2, 0, 0))
            .attr(IFLA_IFNAME, b"eth0\0")
            .attr(IFLA_ADDRESS, &[0x52, 0x54, 0, 0, 0, 3])
            .bytes();
        b.extend(Request::new(NLMSG_DONE, 0, 5, &[0, 0, 0, 0]).bytes());
        let msgs: Vec<_> = messages(&b).collect();
        assert_eq!(msgs.len(), 2);
        assert_eq!((msgs[0].0, msgs[0].1), (RTM_NEWLINK, 5));
        let link = parse_link(msgs[0].2).unwrap();
        assert_eq!(
            link,
            Link {
                index: 2,
                name: "eth0".into(),
                mac: vec![0x52, 0x54, 0, 0, 0, 3]
            }
        );
        assert_eq!(msgs[1].0, NLMSG_DONE);
        // A truncated datagram ends the walk instead of reading past it.
        assert_eq!(messages(&b[..20]).count(), 0);
    }
}
