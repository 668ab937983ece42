//! `host-ctl port-forward <pod> HOSTPORT:GUESTPORT`: relays TCP connections
//! on the host's loopback to a port on the guest's loopback, each over its
//! own vsock connection to the agent's forwarding port.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tokio::net::TcpListener;

use crate::agent::forward;
use crate::pod::StoredPod;

/// Parses `HOSTPORT:GUESTPORT` (HOSTPORT 0: any free port).
pub fn parse_ports(spec: &str) -> Result<(u16, u16)> {
    let (h, g) = spec
        .split_once(':')
        .ok_or_else(|| anyhow!("{spec:?} is not HOSTPORT:GUESTPORT"))?;
    let host = h
        .parse::<u16>()
        .map_err(|_| anyhow!("host port {h:?} is not a port number"))?;
    let guest = g
        .parse::<u16>()
        .map_err(|_| anyhow!("guest port {g:?} is not a port number"))?;
    if guest == 0 {
        bail!("the guest port cannot be 0");
    }
    Ok((host, guest))
}

pub async fn run(state_dir: &Path, id: &str, spec: &str) -> Result<i32> {
    let (host_port, guest_port) = parse_ports(spec)?;
    let pod = StoredPod::open(state_dir, id)?;
    if pod.record.state != crate::pod::State::Running {
        bail!("pod {} is not running", pod.record.id);
    }
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, host_port)))
        .await
        .with_context(|| format!("listening on 127.0.0.1:{host_port}"))?;
    let local = listener.local_addr()?;
    println!(
        "forwarding {local} -> pod {} port {guest_port}",
        &pod.record.id[..8]
    );
    let endpoint = pod
        .record
        .endpoint
        .clone()
        .ok_or_else(|| anyhow!("pod {} has no vsock endpoint", pod.record.id))?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, _) = accepted.context("accepting a connection")?;
                let endpoint = endpoint.clone();
                tokio::spawn(async move {
                    if let Err(e) = forward::relay(tcp, endpoint, guest_port).await {
                        eprintln!("host-ctl: port-forward: {e}");
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs_parse() {
        assert_eq!(parse_ports("8080:80").unwrap(), (8080, 80));
        assert_eq!(parse_ports("0:80").unwrap(), (0, 80));
        assert!(parse_ports("80").is_err());
        assert!(parse_ports("8080:0").is_err());
        assert!(parse_ports("x:80")
            .unwrap_err()
            .to_string()
            .contains("host port"));
        assert!(parse_ports("80:99999").is_err());
    }
}
