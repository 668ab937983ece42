//! Reaching the agent's vsock ports from the host, two ways:
//!
//! * AF_VSOCK, where the host kernel provides it (`/dev/vhost-vsock`): QEMU's
//!   `vhost-vsock-pci` or lkvm's `--vsock`, and a plain vsock connection to
//!   the guest's CID;
//! * *hybrid vsock*: a Unix socket on which the host writes
//!   `CONNECT <port>\n` and reads `OK <n>\n` before the stream carries data
//!   (the protocol of Firecracker, Cloud Hypervisor and vhost-device-vsock,
//!   which serves it for QEMU's `vhost-user-vsock-pci`).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use ttrpc::r#async::transport::Socket;

/// Where a pod's agent is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Endpoint {
    /// Through vhost-device-vsock's Unix socket.
    Hybrid { socket: PathBuf, cid: u32 },
    /// Through the host kernel's AF_VSOCK.
    Vhost { cid: u32 },
}

impl Endpoint {
    pub fn cid(&self) -> u32 {
        match self {
            Endpoint::Hybrid { cid, .. } | Endpoint::Vhost { cid } => *cid,
        }
    }
}

/// A byte stream to a port in the guest, either way.
pub trait GuestStream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> GuestStream for T {}

/// Connects to `port` in the guest, either way, for ttrpc.
pub async fn connect(endpoint: &Endpoint, port: u32) -> io::Result<Socket> {
    Ok(Socket::new(connect_stream(endpoint, port).await?))
}

/// Connects to `port` in the guest, either way: the raw stream, for the
/// ports that do not speak ttrpc (the log stream, port forwarding).
pub async fn connect_stream(endpoint: &Endpoint, port: u32) -> io::Result<Box<dyn GuestStream>> {
    match endpoint {
        Endpoint::Hybrid { socket, .. } => Ok(Box::new(connect_hybrid(socket, port).await?)),
        Endpoint::Vhost { cid } => {
            let addr = tokio_vsock::VsockAddr::new(*cid, port);
            let stream =
                tokio::time::timeout(ATTEMPT_TIMEOUT, tokio_vsock::VsockStream::connect(addr))
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "vsock connect timed out")
                    })??;
            Ok(Box::new(stream))
        }
    }
}

/// The longest handshake reply accepted.
const MAX_REPLY: usize = 64;
/// How long one attempt may wait for the reply.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// Connects to `port` in the guest through the hybrid socket `uds`.
///
/// The reply is read one byte at a time so that no byte after the newline
/// (the start of the agent's data) is swallowed. Only the `OK ` prefix is
/// checked: vhost-device-vsock answers with the guest port, Firecracker
/// with the host-side port.
pub async fn connect_hybrid(uds: &Path, port: u32) -> io::Result<UnixStream> {
    let attempt = async {
        let mut s = UnixStream::connect(uds).await?;
        s.write_all(format!("CONNECT {port}\n").as_bytes()).await?;
        let mut reply = Vec::with_capacity(16);
        loop {
            let mut b = [0u8; 1];
            if s.read(&mut b).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "the guest closed the connection (nothing listens on the port yet)",
                ));
            }
            if b[0] == b'\n' {
                break;
            }
            reply.push(b[0]);
            if reply.len() > MAX_REPLY {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "handshake reply too long",
                ));
            }
        }
        if reply.starts_with(b"OK ") {
            Ok(s)
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "unexpected handshake reply {:?}",
                    String::from_utf8_lossy(&reply)
                ),
            ))
        }
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT, attempt)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no handshake reply"))?
}

/// The delay before attempt `n` (from 0): 10 ms doubling up to 50 ms. An
/// attempt costs the guest next to nothing (a refused connection), and
/// every millisecond between the agent's start and the host noticing it is
/// a millisecond of the pod's start. A pod's first attempt waits for the
/// agent's ready line on the console (see `monitor`).
pub fn backoff(n: u32) -> Duration {
    Duration::from_millis((10u64 << n.min(6)).min(50))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    async fn fake_backend(
        reply: &'static [u8],
        then: &'static [u8],
    ) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 13];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"CONNECT 1024\n");
            // Reply and first payload bytes in one write: none may be lost.
            let mut all = reply.to_vec();
            all.extend_from_slice(then);
            s.write_all(&all).await.unwrap();
        });
        (dir, path)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn payload_after_the_reply_is_kept() {
        let (_d, path) = fake_backend(b"OK 1073741824\n", b"payload").await;
        let mut s = connect_hybrid(&path, 1024).await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"payload");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bad_replies_are_errors() {
        let (_d, path) = fake_backend(b"NO\n", b"").await;
        let e = connect_hybrid(&path, 1024).await.unwrap_err();
        assert!(e.to_string().contains("unexpected handshake reply"), "{e}");
        let (_d, path) = fake_backend(b"", b"").await;
        let e = connect_hybrid(&path, 1024).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn backoff_rises_to_fifty_milliseconds() {
        let d: Vec<u64> = (0..6).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(d, [10, 20, 40, 50, 50, 50]);
    }
}
