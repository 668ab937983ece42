//! The guest's network: only the loopback interface, which apps listen on
//! and port forwarding connects to. The kernel gives `lo` its addresses
//! (127.0.0.1/8, ::1) when it comes up.

use nix::errno::Errno;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use std::os::fd::AsRawFd;

use crate::error::{Context, SysError};

/// Brings `lo` up.
pub(super) fn loopback_up() -> Result<(), SysError> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context(|| "opening a socket to configure lo".into())?;
    // SAFETY: ifreq is plain data; zero is a valid value for every field.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS writes lo's flags into the ifreq we own.
    let got = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut ifr) };
    Errno::result(got).context(|| "reading lo's flags".into())?;
    // SAFETY: SIOCGIFFLAGS just set the union's flags field.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    ifr.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    let set = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &ifr) };
    Errno::result(set).context(|| "bringing lo up".into())?;
    Ok(())
}
