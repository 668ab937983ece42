//! Connecting to a pod's agent.

use std::time::{Duration, Instant};

use kvmpod_api::protocol::agent_ttrpc::AgentClient;
use kvmpod_api::protocol::{ProcessInfo, StatusRequest, TopRequest};
use ttrpc::context::{self, Context};
use ttrpc::r#async::Client;

use super::vsock::{self, backoff, Endpoint};
use super::AgentError;

/// A request context without a deadline (waits and streams).
pub fn no_deadline() -> Context {
    context::with_timeout(0)
}

/// A request context with a deadline.
pub fn deadline(d: Duration) -> Context {
    context::with_timeout(d.as_nanos() as i64)
}

/// Connects to the agent at `endpoint`, retrying with backoff (10 ms
/// doubling to 50 ms) until `until`, and confirms the connection with a
/// status request. `vm_exited` says whether (and how) the VM process
/// ended, which ends the attempts at once.
pub async fn connect(
    endpoint: &Endpoint,
    port: u32,
    vm_exited: &mut dyn FnMut() -> Option<String>,
    until: Instant,
) -> Result<AgentClient, AgentError> {
    connect_with_status(endpoint, port, vm_exited, until)
        .await
        .map(|(client, _)| client)
}

/// [`connect`], with the status that confirmed the connection (under TCG
/// each request costs the guest milliseconds: a caller that needs the
/// status asks once).
pub async fn connect_with_status(
    endpoint: &Endpoint,
    port: u32,
    vm_exited: &mut dyn FnMut() -> Option<String>,
    until: Instant,
) -> Result<(AgentClient, kvmpod_api::protocol::PodStatus), AgentError> {
    let mut last = String::from("no attempt finished");
    for attempt in 0.. {
        if let Some(status) = vm_exited() {
            return Err(AgentError::VmExited(status));
        }
        match vsock::connect(endpoint, port).await {
            Ok(socket) => {
                let client = AgentClient::new(Client::new(socket));
                match client
                    .status(deadline(Duration::from_secs(10)), &StatusRequest::new())
                    .await
                {
                    Ok(status) => return Ok((client, status)),
                    Err(e) => last = format!("the agent did not answer a status request: {e}"),
                }
            }
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= until {
            break;
        }
        tokio::time::sleep(backoff(attempt)).await;
    }
    Err(AgentError::Timeout(last))
}

/// Connects once, for commands that talk to a running pod's agent.
pub async fn connect_once(endpoint: &Endpoint, port: u32) -> Result<AgentClient, AgentError> {
    let socket = vsock::connect(endpoint, port)
        .await
        .map_err(|e| AgentError::Unreachable(format!("{endpoint:?}: {e}")))?;
    Ok(AgentClient::new(Client::new(socket)))
}

/// The processes of the pod's apps (of `app` alone when given), by app and
/// then by PID. A refusal (an app the pod does not have) is the agent's
/// own words.
pub async fn processes(
    client: &AgentClient,
    app: Option<&str>,
) -> Result<Vec<ProcessInfo>, AgentError> {
    let mut req = TopRequest::new();
    req.app = app.unwrap_or_default().to_string();
    client
        .top(deadline(Duration::from_secs(10)), &req)
        .await
        .map(|r| r.processes)
        .map_err(|e| match e {
            ttrpc::Error::RpcStatus(s) => AgentError::Refused(s.message().to_string()),
            e => AgentError::rpc("listing processes")(e),
        })
}
