//! Relaying one TCP connection to a port on the guest's loopback over a
//! vsock connection of its own to the agent's forwarding port: what
//! `port-forward` and the ports a monitor publishes for lkvm both do.

use kvmpod_api::layout::FORWARD_VSOCK_PORT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::vsock::{self, Endpoint};

/// Relays `tcp` to guest port `port` until either side closes; says why
/// when the agent could not be reached or refused.
pub async fn relay(mut tcp: TcpStream, endpoint: Endpoint, port: u16) -> Result<(), String> {
    let mut guest = vsock::connect(&endpoint, FORWARD_VSOCK_PORT)
        .await
        .map_err(|e| format!("cannot reach the pod: {e}"))?;
    guest
        .write_all(format!("TCP {port}\n").as_bytes())
        .await
        .map_err(|e| format!("asking the agent: {e}"))?;
    let mut reply = Vec::new();
    loop {
        let mut b = [0u8; 1];
        match guest.read(&mut b).await {
            Ok(1) if b[0] == b'\n' => break,
            Ok(1) if reply.len() < 512 => reply.push(b[0]),
            _ => return Err("the agent did not answer".into()),
        }
    }
    if reply != b"OK" {
        return Err(String::from_utf8_lossy(&reply).into_owned());
    }
    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut guest).await;
    Ok(())
}
