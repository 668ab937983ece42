//! A pooled VM's wait for its pod (see [`kvmpod_api::pool`]): one vsock
//! listener, closed once a claim came. Blocking, before the runtime's work
//! begins; nothing else runs meanwhile.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use kvmpod_api::layout::CLAIM_VSOCK_PORT;
use kvmpod_api::pool::{is_claim, CLAIM, CLAIMED};
use kvmpod_api::timeline::Stage;
use nix::sys::socket::{
    accept, bind, listen, recv, send, setsockopt, socket, sockopt, AddressFamily, Backlog,
    MsgFlags, SockFlag, SockType, VsockAddr,
};
use nix::sys::time::TimeVal;

use crate::console;
use crate::error::{Context, SysError};

/// How long a connection may take to send its claim.
const CLAIM_READ: Duration = Duration::from_secs(5);

/// Whether the host booted this VM for the warm pool.
pub(super) fn pooled() -> bool {
    std::env::var(kvmpod_api::layout::POOL_ENV).is_ok_and(|v| v == "1")
}

/// Waits until the host claims the VM for a pod.
pub(super) fn await_claim() -> Result<(), SysError> {
    let what = || format!("listening on vsock port {CLAIM_VSOCK_PORT}");
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context(what)?;
    bind(
        fd.as_raw_fd(),
        &VsockAddr::new(libc::VMADDR_CID_ANY, CLAIM_VSOCK_PORT),
    )
    .context(what)?;
    listen(&fd, Backlog::new(4).unwrap_or(Backlog::MAXCONN)).context(what)?;
    console::stage(Stage::PoolWaiting);
    loop {
        let raw = accept(fd.as_raw_fd()).context(|| "accepting a claim".to_string())?;
        // SAFETY: accept returned a new descriptor that nothing else owns.
        let conn = unsafe { OwnedFd::from_raw_fd(raw) };
        match read_claim(&conn) {
            Ok(true) => {
                // The claim holds even if the answer is lost: the host then
                // finds the agent serving its API.
                let _ = send(conn.as_raw_fd(), CLAIMED, MsgFlags::empty());
                return Ok(());
            }
            Ok(false) => log::warn!("a connection to the claim port sent something else"),
            Err(e) => log::warn!("reading a claim: {e}"),
        }
    }
}

/// Reads what the connection sends, up to a claim's length; whether it was
/// one.
fn read_claim(conn: &OwnedFd) -> Result<bool, SysError> {
    let timeout = TimeVal::new(CLAIM_READ.as_secs() as _, 0);
    setsockopt(conn, sockopt::ReceiveTimeout, &timeout)
        .context(|| "setting the claim's timeout".to_string())?;
    let mut got = vec![0u8; CLAIM.len()];
    let mut n = 0;
    while n < got.len() {
        match recv(conn.as_raw_fd(), &mut got[n..], MsgFlags::empty()) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context(|| "reading the claim".to_string()),
        }
    }
    Ok(is_claim(&got[..n]))
}
