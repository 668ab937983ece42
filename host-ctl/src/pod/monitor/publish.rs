//! Published ports of a pod whose hypervisor's user-mode network cannot
//! take connections from the host (lkvm's): the monitor listens on each
//! host port and relays every connection over vsock to the guest port, as
//! docker's userland proxy does. The listeners live as long as the
//! monitor; a monitor that adopts the pod binds them again.

use std::net::SocketAddr;

use kvmpod_api::network::{PortMapping, Protocol};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::agent::{forward, Endpoint};
use crate::pod::PodError;

/// The accept loops, stopped when dropped.
pub struct Publisher {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Publisher {
    /// Binds every port (TCP only: the plan refused UDP), then serves them.
    pub async fn start(ports: &[PortMapping], endpoint: &Endpoint) -> Result<Self, PodError> {
        let mut tasks = Vec::new();
        for p in ports {
            if p.protocol != Protocol::Tcp {
                return Err(PodError::Invalid(format!(
                    "published port {p}: only TCP can be relayed over vsock"
                )));
            }
            let addr = SocketAddr::new(p.host_ip, p.host_port);
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| PodError::Io {
                    what: "publishing a port on",
                    path: addr.to_string().into(),
                    source,
                })?;
            let endpoint = endpoint.clone();
            let guest = p.guest_port;
            tasks.push(tokio::spawn(async move {
                loop {
                    let tcp = match listener.accept().await {
                        Ok((tcp, _)) => tcp,
                        // Out of descriptors, say: the port stays published.
                        Err(e) => {
                            eprintln!("host-ctl: published port {addr}: accepting: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let endpoint = endpoint.clone();
                    tokio::spawn(async move {
                        if let Err(e) = forward::relay(tcp, endpoint, guest).await {
                            eprintln!("host-ctl: published port {addr}: {e}");
                        }
                    });
                }
            }));
        }
        Ok(Publisher { tasks })
    }
}
