//! Pod networking on QEMU: the default user-mode network (passt) publishes
//! TCP and UDP ports and keeps the guest from the host's loopback unless
//! the pod asks; `none` leaves only `lo`; a busy port fails the pod before
//! any VM starts; `tap` puts pods on a CNI bridge where they reach each
//! other by address. (lkvm's user-mode network is proved in the nested
//! KVM host: `lkvm-network` in boot_nested.)

use std::process::Command;

use kvmpod_tests::net::{add_host_program, free_port, loopback_service, wait_for_http, CniNet};
use kvmpod_tests::{Fixture, CMD};
use serde_json::Value;

const SECRET: &str = "host-loopback-secret";

/// An app serving `/www/index.html` (`body`) with busybox httpd on port 80.
fn web_root(fx: &Fixture, body: &str) -> std::path::PathBuf {
    let root = fx.root();
    std::fs::create_dir_all(root.join("www")).unwrap();
    std::fs::write(root.join("www/index.html"), body).unwrap();
    root
}

const HTTPD: &str = "exec httpd -f -p 80 -h /www";

/// The host's own address on its default route (no packet is sent).
fn host_address() -> String {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("192.0.2.1:9")
        .expect("a route to find the host's address");
    s.local_addr().unwrap().ip().to_string()
}

/// What a guest gets from `host:port` with busybox nc ("" when refused).
fn guest_fetch(fx: &Fixture, id: &str, app: &str, host: &str, port: u16) -> String {
    // passt may keep the connection half-open after the host closed it:
    // the output so far is what counts.
    let script = format!("timeout 5 nc -w 5 {host} {port} </dev/null; true");
    let out = fx.host_ctl(&["exec", id, app, "--", "sh", "-c", &script], CMD);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    out.stdout
}

/// iperf3's datagrams reach the server through published UDP port `perf`
/// (its control connection through the TCP one), and are answered.
fn udp_through(perf: u16) {
    let host = host_address();
    let udp = Command::new("iperf3")
        .args([
            "-c",
            &host,
            "-p",
            &perf.to_string(),
            "-u",
            "-b",
            "1M",
            "-t",
            "1",
            "-J",
        ])
        .output()
        .expect("running iperf3");
    let report: Value = serde_json::from_slice(&udp.stdout).unwrap_or(Value::Null);
    let received = &report["end"]["sum"];
    assert!(
        udp.status.success() && received["packets"].as_u64().unwrap_or(0) > 0,
        "UDP through the published port: {}\n{}",
        String::from_utf8_lossy(&udp.stdout),
        String::from_utf8_lossy(&udp.stderr)
    );
    assert!(
        received["lost_percent"].as_f64().unwrap_or(100.0) < 50.0,
        "{received}"
    );
}

/// status and list show the ports; stats counts the interface's traffic.
fn shown_and_counted(fx: &Fixture, id: &str, http: u16) {
    let st = fx.host_ctl(&["status", id], CMD);
    assert!(
        st.stdout.contains("network:  user, address 10.0.2.15"),
        "{}",
        st.dump()
    );
    assert!(
        st.stdout.contains(&format!("127.0.0.1:{http}->80/tcp")),
        "{}",
        st.dump()
    );
    let list = fx.host_ctl(&["list", "--format", "json"], CMD);
    let pods: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(
        pods[0]["network"]["ports"].as_array().map(Vec::len),
        Some(3),
        "{pods}"
    );
    let stats = fx.host_ctl(&["stats", id, "--format", "json"], CMD);
    let stats: Value = serde_json::from_str(&stats.stdout).unwrap();
    let eth = &stats["interfaces"][0];
    assert_eq!(eth["interface"], "eth0", "{stats}");
    assert!(eth["rxBytes"].as_u64().unwrap_or(0) > 100_000, "{stats}");
    assert!(eth["txPackets"].as_u64().unwrap_or(0) > 10, "{stats}");
}

#[test]
fn user_mode_publishes_ports_and_hides_the_host_loopback() {
    let fx = Fixture::new();
    web_root(&fx, "hello through passt\n");
    add_host_program(&fx.root(), "/usr/bin/iperf3");
    let secret_port = loopback_service(SECRET);
    let (http, perf) = (free_port(), free_port());
    let manifest = fx
        .pod()
        .app("web", HTTPD)
        .app("perf", "exec /usr/bin/iperf3 -s -p 5201")
        .write("web.json");
    // UDP from the host's own address: replies to its loopback would need
    // the gateway mapped there (refused below).
    let publish = [
        format!("{http}:80"),
        format!("0.0.0.0:{perf}:5201/tcp"),
        format!("0.0.0.0:{perf}:5201/udp"),
    ];
    let mut args = Vec::new();
    for p in &publish {
        args.extend(["-p", p.as_str()]);
    }
    let id = fx.detach(&manifest, &args);

    // TCP from the host through the published port.
    let page = wait_for_http(&format!("127.0.0.1:{http}"), "/", "hello through passt");
    assert!(
        page.contains("200 OK") && page.contains("hello through passt"),
        "{page:?}"
    );
    udp_through(perf);

    // The guest's gateway is not the host's loopback.
    let got = guest_fetch(&fx, &id, "web", "10.0.2.2", secret_port);
    assert!(
        !got.contains(SECRET),
        "the guest reached the host's loopback: {got:?}"
    );

    shown_and_counted(&fx, &id, http);
    // The pod's last events carry the interface's counters.
    let mut events = fx.spawn_host_ctl(&["events", &id, "--format", "json"]);
    events.wait_for_stdout("\"seq\"", CMD);
    let stop = fx.host_ctl(&["stop", &id], CMD);
    assert_eq!(stop.code, Some(0), "{}", stop.dump());
    let events = events.finish(CMD);
    let stopping = events
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["kind"] == "pod-stopping")
        .unwrap_or_else(|| panic!("no pod-stopping event\n{}", events.dump()));
    let eth = &stopping["interfaces"][0];
    assert_eq!(eth["interface"], "eth0", "{stopping}");
    assert!(eth["rxBytes"].as_u64().unwrap_or(0) > 0, "{stopping}");

    // Asked for, the host's loopback is reachable through the gateway.
    let open = fx.one_app("web", HTTPD).write("open.json");
    let id = fx.detach(&open, &["--net", "user,host-loopback"]);
    let got = guest_fetch(&fx, &id, "web", "10.0.2.2", secret_port);
    assert_eq!(got, SECRET);
    let stop = fx.host_ctl(&["stop", &id], CMD);
    assert_eq!(stop.code, Some(0), "{}", stop.dump());
    fx.finish();
}

/// A tap device the host made, with its own address: the pod's address
/// is given with the mode, and the host reaches the pod on it.
#[test]
fn a_pod_on_a_host_tap_device() {
    let fx = Fixture::new();
    web_root(&fx, "hello through a host tap\n");
    let tag = std::process::id() % 10_000;
    let dev = format!("kvmpodtap{tag}");
    let subnet = format!("10.{}.{}", 200 + tag / 250 % 50, tag % 250);
    let ip = |args: &[&str]| {
        let st = Command::new("ip").args(args).status().unwrap();
        assert!(st.success(), "ip {args:?}");
    };
    ip(&["tuntap", "add", "dev", &dev, "mode", "tap"]);
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
        }
    }
    let _gone = Gone(dev.clone());
    ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &dev]);
    ip(&["link", "set", &dev, "up"]);
    let manifest = fx.one_app("web", HTTPD).write("tap.json");
    let net = format!("tap={dev},address={subnet}.2/24,gateway={subnet}.1");
    let id = fx.detach(&manifest, &["--net", &net]);
    let page = wait_for_http(&format!("{subnet}.2:80"), "/", "hello through a host tap");
    assert!(page.contains("hello through a host tap"), "{page:?}");
    let stop = fx.host_ctl(&["stop", &id], CMD);
    assert_eq!(stop.code, Some(0), "{}", stop.dump());
    fx.finish();
}

#[test]
fn a_pod_without_a_network_has_only_loopback() {
    let fx = Fixture::new();
    let manifest = fx
        .one_app("app", "ls /sys/class/net; cat /etc/resolv.conf")
        .write("none.json");
    let out = fx.run(
        &["--net", "none", manifest.to_str().unwrap()],
        kvmpod_tests::POD_LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(
        out.stdout
            .starts_with("lo\n# kvmpod: the pod has no network"),
        "{}",
        out.dump()
    );
    fx.finish();
}

#[test]
fn a_busy_port_fails_the_pod_before_its_vm_starts() {
    let fx = Fixture::new();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let manifest = fx.one_app("app", "true").write("busy.json");
    let spec = format!("{port}:80");
    let out = fx.run(&["-p", &spec, manifest.to_str().unwrap()], CMD);
    assert_ne!(out.code, Some(0), "{}", out.dump());
    assert!(
        out.stderr
            .contains(&format!("host port {port}/tcp on 127.0.0.1 is in use")),
        "{}",
        out.dump()
    );
    // Bad specs are refused by the command line, before anything else.
    let bad = fx.run(&["-p", "80", manifest.to_str().unwrap()], CMD);
    assert_eq!(bad.code, Some(2), "{}", bad.dump());
    let bad = fx.run(&["--net", "tap", manifest.to_str().unwrap()], CMD);
    assert!(
        bad.stderr.contains("tap mode needs a tap device"),
        "{}",
        bad.dump()
    );
    // UDP on the host's loopback could not be answered without the
    // gateway's mapping: refused, with the ways out.
    let udp = format!("{}:53/udp", free_port());
    let bad = fx.run(&["-p", &udp, manifest.to_str().unwrap()], CMD);
    assert!(
        bad.stderr
            .contains("or allow it with --net user,host-loopback"),
        "{}",
        bad.dump()
    );
    drop(held);
    fx.finish_without_pods();
}

/// The MAC address of `eth0` in network namespace `ns`.
fn eth0_mac(ns: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", "eth0"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn tap_pods_on_a_cni_bridge_reach_each_other() {
    let fx = Fixture::new();
    web_root(&fx, "hello over the bridge\n");
    let tag = std::process::id() % 10_000;
    let mut net = CniNet::new(
        &format!("kvmpodt{tag}"),
        &format!("10.{}.{}.0/24", 100 + tag / 250 % 100, tag % 250),
        &fx.path().join("cni"),
    );
    let (ns1, addr1) = net.add(&format!("kvmpod-a{tag}"));
    let (ns2, _) = net.add(&format!("kvmpod-b{tag}"));
    let cni_mac = eth0_mac(&format!("kvmpod-a{tag}"));
    let manifest = fx.one_app("web", HTTPD).write("tap.json");
    let net1 = format!("tap,netns={}", ns1.display());
    let net2 = format!("tap,netns={}", ns2.display());
    let one = fx.detach(&manifest, &["--net", &net1]);
    let two = fx.detach(&manifest, &["--net", &net2]);
    let st = fx.host_ctl(&["status", &one], CMD);
    assert!(
        st.stdout
            .contains(&format!("network:  tap, address {addr1}")),
        "{}",
        st.dump()
    );
    // The host reaches a pod through the bridge, and so does the other pod.
    let page = wait_for_http(&format!("{addr1}:80"), "/", "hello over the bridge");
    assert!(page.contains("hello over the bridge"), "{page:?}");
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {addr1} 80");
    let got = fx.host_ctl(&["exec", &two, "web", "--", "sh", "-c", &script], CMD);
    assert!(
        got.stdout.contains("hello over the bridge"),
        "{}",
        got.dump()
    );
    // The guest took the CNI interface's MAC address with its address.
    let mac = fx.host_ctl(
        &[
            "exec",
            &one,
            "web",
            "--",
            "cat",
            "/sys/class/net/eth0/address",
        ],
        CMD,
    );
    assert_eq!(mac.stdout.trim(), cni_mac, "{}", mac.dump());
    for id in [&one, &two] {
        let stop = fx.host_ctl(&["stop", id], CMD);
        assert_eq!(stop.code, Some(0), "{}", stop.dump());
    }
    // The namespace is as CNI left it: its address back, no tap, no bridge.
    let ns_name = format!("kvmpod-a{tag}");
    let ip = |args: &[&str]| {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&ns_name)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let addrs = ip(&["-4", "addr", "show", "eth0"]);
    assert!(addrs.contains(&format!("inet {addr1}/")), "{addrs}");
    assert_eq!(
        eth0_mac(&ns_name),
        cni_mac,
        "the interface's MAC address is not back"
    );
    let links = ip(&["link", "show"]);
    assert!(
        !links.contains("kvmpod0") && !links.contains("kvmpod-br0"),
        "{links}"
    );
    drop(net);
    fx.finish();
}
