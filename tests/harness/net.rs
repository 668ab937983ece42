//! What the network tests need on the host: free ports, a loopback
//! service that answers with a secret, a host program (with its shared
//! libraries) copied into an app root, and CNI-wired network namespaces
//! that are torn down even when a test fails.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A TCP port nothing listens on now (on 127.0.0.1).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    let port = l.local_addr().expect("local address").port();
    let u = UdpSocket::bind(("127.0.0.1", port));
    if u.is_err() {
        return free_port();
    }
    port
}

/// A service on the host's loopback that answers every connection with
/// `secret` and closes it; it lives as long as the test process.
pub fn loopback_service(secret: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a loopback service");
    let port = l.local_addr().expect("local address").port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(secret.as_bytes());
        }
    });
    port
}

/// An HTTP GET of `path` from `host:port`, as text ("" when nothing came).
pub fn http_get(addr: &str, path: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// GETs `path` from `addr` until the page contains `expected` (up to
/// ten seconds, while a pod's server starts); returns the last page.
pub fn wait_for_http(addr: &str, path: &str, expected: &str) -> String {
    let mut page = String::new();
    for _ in 0..50 {
        page = http_get(addr, path);
        if page.contains(expected) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    page
}

/// Copies the host program `program` into `root` at the same path, with
/// every shared library `ldd` names (the guest runs the host's binaries).
pub fn add_host_program(root: &Path, program: &str) {
    assert!(
        Path::new(program).exists(),
        "{program} is missing: run `make deps`"
    );
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .expect("running ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut files = vec![PathBuf::from(program)];
    for line in text.lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        files.extend(path);
    }
    for f in files {
        let dest = root.join(f.strip_prefix("/").expect("absolute"));
        fs::create_dir_all(dest.parent().expect("parent")).expect("creating a lib directory");
        fs::copy(&f, &dest).unwrap_or_else(|e| panic!("copying {}: {e}", f.display()));
    }
}

/// A CNI `bridge` network with `host-local` addresses and network
/// namespaces on it, each with an `eth0` as a kubelet's CNI call leaves
/// it. Dropping it deletes the namespaces and the bridge.
pub struct CniNet {
    name: String,
    conf: String,
    data: PathBuf,
    namespaces: Vec<String>,
}

const CNI_PATH: &str = "/usr/lib/cni";

impl CniNet {
    /// A network `name` (also its bridge's name, at most 15 characters)
    /// on `subnet`; `data` keeps host-local's leases.
    pub fn new(name: &str, subnet: &str, data: &Path) -> CniNet {
        assert!(
            Path::new(CNI_PATH).join("bridge").exists(),
            "{CNI_PATH}/bridge is missing: run `make deps` (containernetworking-plugins)"
        );
        let conf = serde_json::json!({
            "cniVersion": "0.4.0", "name": name, "type": "bridge", "bridge": name,
            "isGateway": true,
            "ipam": {"type": "host-local", "subnet": subnet,
                     "dataDir": data.to_string_lossy()}
        })
        .to_string();
        CniNet {
            name: name.into(),
            conf,
            data: data.to_path_buf(),
            namespaces: Vec::new(),
        }
    }

    fn cni(&self, command: &str, ns: &str) -> std::process::Output {
        let mut child = Command::new(Path::new(CNI_PATH).join("bridge"))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", ns)
            .env("CNI_NETNS", format!("/run/netns/{ns}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", CNI_PATH)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running the CNI bridge plugin");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(self.conf.as_bytes())
            .expect("writing the CNI configuration");
        child
            .wait_with_output()
            .expect("waiting for the CNI plugin")
    }

    /// A new namespace `/run/netns/<ns>` wired by the plugin; its address.
    pub fn add(&mut self, ns: &str) -> (PathBuf, String) {
        let made = Command::new("ip").args(["netns", "add", ns]).status();
        assert!(made.is_ok_and(|s| s.success()), "ip netns add {ns}");
        self.namespaces.push(ns.to_string());
        let out = self.cni("ADD", ns);
        assert!(
            out.status.success(),
            "CNI ADD: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let result: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("the CNI result");
        let address = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .expect("an address in the CNI result")
            .to_string();
        (PathBuf::from(format!("/run/netns/{ns}")), address)
    }
}

impl Drop for CniNet {
    fn drop(&mut self) {
        for ns in std::mem::take(&mut self.namespaces) {
            let _ = self.cni("DEL", &ns);
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(&self.data);
    }
}
