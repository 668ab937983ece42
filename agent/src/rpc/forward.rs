//! Port forwarding: the host connects to vsock port 1025, names a TCP port
//! (`TCP <port>\n`), and the agent relays the connection to that port on
//! the guest's loopback after answering `OK\n` (or `ERR <why>\n`).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_vsock::{VsockAddr, VsockListener, VsockStream, VMADDR_CID_ANY};

use super::RpcError;

/// How long the host has to name the port.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEADER: usize = 32;

/// Listens on `port` for the life of the agent.
pub fn start(port: u32) -> io::Result<()> {
    let listener = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port))?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(relay(stream));
                }
                Err(e) => {
                    log::warn!("port forwarding: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(())
}

/// The most bytes a `SOURCE` request may ask for.
const MAX_SOURCE: u64 = 1 << 30;

/// What a connection to the forwarding port asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    /// Relay to this TCP port on the guest's loopback.
    Tcp(u16),
    /// Echo every byte back (a measure of raw vsock round trips).
    Echo,
    /// Send this many zero bytes, then close (raw vsock throughput).
    Source(u64),
}

/// Parses `TCP <port>`, `ECHO` or `SOURCE <bytes>`.
fn parse_header(line: &str) -> Result<Request, RpcError> {
    if line == "ECHO" {
        return Ok(Request::Echo);
    }
    if let Some(n) = line.strip_prefix("SOURCE ") {
        return match n.trim().parse::<u64>() {
            Ok(n) if n <= MAX_SOURCE => Ok(Request::Source(n)),
            _ => Err(RpcError::BadByteCount(n.to_string(), MAX_SOURCE)),
        };
    }
    let port = line
        .strip_prefix("TCP ")
        .ok_or_else(|| RpcError::UnknownRequest(line.to_string()))?;
    match port.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(Request::Tcp(p)),
        _ => Err(RpcError::BadPort(port.to_string())),
    }
}

async fn read_header(stream: &mut VsockStream) -> Result<Request, RpcError> {
    let mut line = Vec::with_capacity(MAX_HEADER);
    loop {
        let mut b = [0u8; 1];
        match stream.read(&mut b).await? {
            0 => return Err(RpcError::ClosedEarly),
            _ if b[0] == b'\n' => break,
            _ => line.push(b[0]),
        }
        if line.len() > MAX_HEADER {
            return Err(RpcError::LineTooLong);
        }
    }
    parse_header(&String::from_utf8_lossy(&line))
}

async fn relay(mut stream: VsockStream) {
    let port = match tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut stream)).await {
        Ok(Ok(Request::Tcp(p))) => p,
        Ok(Ok(Request::Echo)) => {
            if stream.write_all(b"OK\n").await.is_ok() {
                let (mut r, mut w) = stream.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
            return;
        }
        Ok(Ok(Request::Source(n))) => {
            if stream.write_all(b"OK\n").await.is_ok() {
                let _ = tokio::io::copy(&mut tokio::io::repeat(0).take(n), &mut stream).await;
                let _ = AsyncWriteExt::shutdown(&mut stream).await;
            }
            return;
        }
        Ok(Err(why)) => {
            let _ = stream.write_all(format!("ERR {why}\n").as_bytes()).await;
            return;
        }
        Err(_) => return,
    };
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    let tcp = match TcpStream::connect(v4).await {
        Ok(t) => t,
        Err(e4) => match TcpStream::connect(v6).await {
            Ok(t) => t,
            Err(_) => {
                let msg = format!("ERR nothing accepts connections on guest port {port}: {e4}\n");
                let _ = stream.write_all(msg.as_bytes()).await;
                return;
            }
        },
    };
    if stream.write_all(b"OK\n").await.is_err() {
        return;
    }
    splice(stream, tcp).await;
}

/// Relays bytes both ways. The host's end of file half-closes the TCP
/// connection (a client may still await the reply); the guest server's
/// end of file ends the whole relay: the hybrid vsock backend passes on a
/// full close only, and the host's client must see the server finish.
async fn splice(vsock: VsockStream, tcp: TcpStream) {
    let (mut from_host, mut to_host) = vsock.into_split();
    let (mut from_app, mut to_app) = tcp.into_split();
    let inbound = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_host, &mut to_app).await;
        let _ = to_app.shutdown().await;
    });
    let _ = tokio::io::copy(&mut from_app, &mut to_host).await;
    let _ = to_host.shutdown().await;
    inbound.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_or_say_why_not() {
        assert_eq!(parse_header("TCP 80").ok(), Some(Request::Tcp(80)));
        assert_eq!(parse_header("TCP 65535").ok(), Some(Request::Tcp(65535)));
        assert_eq!(parse_header("ECHO").ok(), Some(Request::Echo));
        assert_eq!(
            parse_header("SOURCE 1024").ok(),
            Some(Request::Source(1024))
        );
        assert!(parse_header("SOURCE 99999999999").is_err());
        assert!(parse_header("TCP 0").is_err());
        assert!(parse_header("TCP 65536")
            .unwrap_err()
            .to_string()
            .contains("invalid port"));
        assert!(parse_header("UDP 53")
            .unwrap_err()
            .to_string()
            .contains("unknown request"));
        // What the host reads after "ERR ".
        assert_eq!(
            parse_header("SOURCE x").unwrap_err().to_string(),
            "invalid byte count \"x\" (at most 1073741824)"
        );
        assert_eq!(
            parse_header("UDP 53").unwrap_err().to_string(),
            "unknown request \"UDP 53\" (expected \"TCP <port>\", \"ECHO\" or \"SOURCE <bytes>\")"
        );
        assert!(parse_header("").is_err());
    }
}
