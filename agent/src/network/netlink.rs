//! A blocking rtnetlink socket and the few requests the guest makes: list
//! links, bring one up (with an MTU), add an address and a default route.
//! Messages are built and parsed by `netlink-packet-route`.

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroI32;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::NetError;

/// A link as the kernel lists it.
pub(super) struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
}

pub(super) struct Rtnl {
    socket: Socket,
    seq: std::cell::Cell<u32>,
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> NetError + '_ {
    move |source| NetError::Io {
        what: what.to_string(),
        source,
    }
}

impl Rtnl {
    pub fn open() -> Result<Self, NetError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(io("opening an rtnetlink socket"))?;
        socket
            .bind_auto()
            .map_err(io("binding the rtnetlink socket"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(io("connecting the rtnetlink socket"))?;
        Ok(Rtnl {
            socket,
            seq: std::cell::Cell::new(0),
        })
    }

    /// Sends one request and collects the replies until the kernel's
    /// acknowledgement (or the end of a dump); a refusal is an error.
    fn request(
        &self,
        message: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, NetError> {
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(io(what))?;

        let mut replies = Vec::new();
        let mut rx = vec![0u8; 64 * 1024];
        loop {
            let n = self.socket.recv(&mut &mut rx[..], 0).map_err(io(what))?;
            let mut offset = 0;
            while offset < n {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[offset..n])
                    .map_err(|e| NetError::Invalid(format!("{what}: unreadable reply: {e}")))?;
                let len = reply.header.length as usize;
                if len == 0 {
                    return Err(NetError::Invalid(format!("{what}: empty reply")));
                }
                offset += len;
                if reply.header.sequence_number != seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Error(e) => {
                        return match e.code.map(NonZeroI32::get) {
                            None => Ok(replies),
                            Some(code) => Err(NetError::Kernel {
                                what: what.to_string(),
                                errno: nix::errno::Errno::from_raw(-code),
                            }),
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn links(&self) -> Result<Vec<Link>, NetError> {
        let replies = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
            "listing the network interfaces",
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .map(|l| {
                let mut link = Link {
                    index: l.header.index,
                    name: String::new(),
                    mac: Vec::new(),
                };
                for a in l.attributes {
                    match a {
                        LinkAttribute::IfName(n) => link.name = n,
                        LinkAttribute::Address(m) => link.mac = m,
                        _ => {}
                    }
                }
                link
            })
            .collect())
    }

    pub fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetError> {
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }

    pub fn link_by_mac(&self, mac: &[u8; 6]) -> Result<Option<Link>, NetError> {
        Ok(self.links()?.into_iter().find(|l| l.mac == mac))
    }

    /// Sets the link up, and its MTU when given.
    pub fn set_up(&self, index: u32, mtu: Option<u32>, name: &str) -> Result<(), NetError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        if let Some(mtu) = mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        self.request(
            RouteNetlinkMessage::SetLink(m),
            NLM_F_ACK,
            &format!("bringing {name} up"),
        )
        .map(drop)
    }

    pub fn add_address(
        &self,
        index: u32,
        address: IpAddr,
        prefix_len: u8,
        name: &str,
    ) -> Result<(), NetError> {
        let mut m = AddressMessage::default();
        m.header.family = match address {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        m.header.prefix_len = prefix_len;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(address));
        m.attributes.push(AddressAttribute::Address(address));
        if let IpAddr::V4(v4) = address {
            m.attributes
                .push(AddressAttribute::Broadcast(broadcast(v4, prefix_len)));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &format!("adding {address}/{prefix_len} to {name}"),
        )
        .map(drop)
    }

    pub fn add_default_route(
        &self,
        index: u32,
        gateway: Ipv4Addr,
        name: &str,
    ) -> Result<(), NetError> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        m.attributes.push(RouteAttribute::Oif(index));
        self.request(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &format!("adding the default route via {gateway} on {name}"),
        )
        .map(drop)
    }
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
}
