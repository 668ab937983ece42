//! `kvmpod-nested-scenarios`: the boot tests that need a real KVM host with
//! vhost-vsock, run inside the nested test host by `boot_nested.rs`:
//!
//!     tests/nested/run -- kvmpod-nested-scenarios [SCENARIO]...
//!
//! Each scenario prints `SCENARIO <name> ok (<seconds>s)` or `SCENARIO
//! <name> FAILED: <why>`; the exit status is 1 if any failed. Outside a KVM
//! host with vhost-vsock it fails at once and says so.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kvmpod_tests::{assert_checks, check, equals, erofs, Fixture, CMD, POD_LIMIT};
use serde_json::{json, Value};

type Scenario = (&'static str, fn());

const SCENARIOS: [Scenario; 8] = [
    ("lkvm-pod", lkvm_pod),
    ("lkvm-network", lkvm_network),
    ("lkvm-image", lkvm_image),
    ("lkvm-detached", lkvm_detached),
    ("lkvm-sandbox", lkvm_sandbox),
    ("lkvm-ends-on-failures", lkvm_ends_on_failures),
    ("lkvm-symlink-jail", lkvm_symlink_jail),
    ("qemu-kvm-af-vsock", qemu_kvm_af_vsock),
];

fn main() -> ExitCode {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    if let Err(why) = prerequisites() {
        println!("SCENARIO prerequisites FAILED: {why}");
        return ExitCode::FAILURE;
    }
    std::thread::spawn(watchdog);
    let mut failed = false;
    for (name, scenario) in SCENARIOS {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
            continue;
        }
        let start = Instant::now();
        *CURRENT.lock().unwrap() = Some((name, start));
        match std::panic::catch_unwind(scenario) {
            Ok(()) => println!("SCENARIO {name} ok ({:.1}s)", start.elapsed().as_secs_f64()),
            Err(e) => {
                failed = true;
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                println!("SCENARIO {name} FAILED: {why}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The scenario running now, and since when: what the watchdog checks.
static CURRENT: Mutex<Option<(&'static str, Instant)>> = Mutex::new(None);

/// The longest a scenario may run. Each takes 20–100 s on an emulated
/// host, several times that under load; past this it is stuck.
const SCENARIO_LIMIT: Duration = Duration::from_secs(420);

/// Ends the run when a scenario overruns, after printing every process of
/// the nested host with its state and kernel wait channel (and the kernel
/// stack of those in uninterruptible sleep), which is what tells a hung
/// VM from a hung command.
fn watchdog() {
    loop {
        std::thread::sleep(Duration::from_secs(5));
        let Some((name, start)) = *CURRENT.lock().unwrap() else {
            continue;
        };
        if start.elapsed() < SCENARIO_LIMIT {
            continue;
        }
        println!(
            "SCENARIO {name} FAILED: still running after {} s; the nested host's processes:\n{}",
            SCENARIO_LIMIT.as_secs(),
            process_table()
        );
        std::process::exit(1);
    }
}

/// `PID STATE WCHAN COMMAND` for every process, from /proc.
fn process_table() -> String {
    let mut rows = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return "(no /proc)".into();
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let proc_dir = entry.path();
        let stat = fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').next())
            .unwrap_or("?")
            .to_string();
        let wchan = fs::read_to_string(proc_dir.join("wchan")).unwrap_or_default();
        let cmdline = fs::read(proc_dir.join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        let mut row = format!("  {pid:>6} {state} {wchan:<24} {}", cmdline.trim());
        if state == "D" {
            let stack = fs::read_to_string(proc_dir.join("stack")).unwrap_or_default();
            for frame in stack.lines() {
                row.push_str(&format!("\n           {frame}"));
            }
        }
        rows.push((pid, row));
    }
    rows.sort();
    rows.into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A KVM host with vhost-vsock and lkvm: what the nested host provides.
fn prerequisites() -> Result<(), String> {
    for dev in ["/dev/kvm", "/dev/vhost-vsock"] {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dev)
            .map_err(|e| format!("{dev}: {e} (these scenarios run inside tests/nested/run)"))?;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|d| d.join("lkvm").is_file()) {
        return Err("lkvm is not on PATH; run `make deps` (it builds kvmtool)".into());
    }
    Ok(())
}

/// The pod directory of pod `id`.
fn pod_dir(fx: &Fixture, id: &str) -> std::path::PathBuf {
    fx.state_dir().join("pods").join(id)
}

/// An image's layers through lkvm's 9p: the overlay sees the whiteout, the
/// opaque directory, the hard link and the symlink, and an app's write
/// over an image file stays in the guest.
fn lkvm_image() {
    let fx = Fixture::new();
    // The nested host's own disk is the outer host's root over 9p, which
    // cannot hold the whiteouts (character devices 0:0) layers need: the
    // store goes on a tmpfs, as it would on any local file system.
    let state = fx.state_dir();
    fs::create_dir_all(&state).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &state,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .expect("a tmpfs for the state directory");
    let archive = fx.path().join("image.tar");
    kvmpod_tests::images::write_test_image(&fx.root(), &archive, "kvmpod/test:1");
    let out = fx.host_ctl(
        &["image", "import", archive.to_str().unwrap()],
        kvmpod_tests::CMD,
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let out = fx.run(
        &[
            "--hypervisor",
            "lkvm",
            "--boot-timeout",
            "240",
            "-u",
            "0",
            "kvmpod/test:1",
            "echo $(ls -A /data); [ -e /gone ] && echo gone-is-there; stat -c '%a %h' /data/new; \
             readlink /data/sym; echo changed > /etc/motd; cat /etc/motd",
        ],
        POD_LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(
        out.stdout,
        "link new sym\n604 2\nnew\nchanged\n",
        "{}",
        out.dump()
    );
    // The layer that holds /etc/motd in the store is as it was imported.
    let snapshots = fx.state_dir().join("images/snapshots");
    let motds: Vec<String> = fs::read_dir(&snapshots)
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("etc/motd")).ok())
        .collect();
    assert_eq!(
        motds,
        ["from the image\n"],
        "an app's write reached the store"
    );
    nix::mount::umount2(&state, nix::mount::MntFlags::MNT_DETACH).expect("unmounting");
    fx.finish();
}

/// Two apps under lkvm: a writable host volume, a read-only one (EROFS in
/// the guest, the host file unchanged), an empty volume shared by the apps,
/// a source path with a comma, and an app that exits 3. host-ctl exits 3,
/// and lkvm has ended by itself (the guest rebooted it away).
fn lkvm_pod() {
    let fx = Fixture::new();
    let rw = fx.host_dir("rw", &[]);
    let ro = fx.host_dir("ro", &[("keep.txt", "original\n")]);
    let comma = fx.host_dir("with,comma", &[("in.txt", "through the alias\n")]);
    let writer = [
        check("rw-write", "echo 'from lkvm' > /rw/out.txt"),
        erofs("ro-erofs", "/ro/keep.txt"),
        equals("comma-read", "cat /comma/in.txt", "through the alias"),
        check("comma-write", "echo new > /comma/new.txt"),
        "echo shared > /shared/msg.tmp && mv /shared/msg.tmp /shared/msg; exit 3".into(),
    ]
    .concat();
    let reader = format!(
        "i=0; while [ ! -e /shared/msg ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; {}",
        equals("empty-shared", "cat /shared/msg", "shared")
    );
    let m = fx
        .pod()
        .host_volume("rw", &rw)
        .host_volume("ro", &ro)
        .host_volume("comma", &comma)
        .volume(json!({"name": "shared", "kind": "empty"}))
        .app("writer", &writer)
        .mount("rw", "/rw")
        .mount_ro("ro", "/ro")
        .mount("comma", "/comma")
        .mount("shared", "/shared")
        .app("reader", &reader)
        .mount("shared", "/shared")
        .write("pod.json");
    let out = fx.run(
        &[
            "--hypervisor",
            "lkvm",
            "--boot-timeout",
            "240",
            m.to_str().unwrap(),
        ],
        POD_LIMIT,
    );
    assert_eq!(out.code, Some(3), "{}", out.dump());
    assert_checks(
        &out.stdout,
        &out.dump(),
        &[
            "rw-write",
            "ro-erofs",
            "comma-read",
            "comma-write",
            "empty-shared",
        ],
    );
    assert!(!out.stderr.contains("did not power off"), "{}", out.dump());
    let id = kvmpod_tests::fixture_pods(&fx)
        .pop()
        .expect("a pod was created");
    let console = fs::read_to_string(pod_dir(&fx, &id).join("console.log")).unwrap();
    assert!(
        console.contains("KVM session ended normally"),
        "lkvm did not end by itself:\n{console}"
    );
    assert_eq!(
        fs::read_to_string(rw.join("out.txt")).unwrap(),
        "from lkvm\n"
    );
    assert_eq!(
        fs::read_to_string(ro.join("keep.txt")).unwrap(),
        "original\n"
    );
    assert_eq!(fs::read_to_string(comma.join("new.txt")).unwrap(), "new\n");
    fx.finish();
}

/// A detached pod under lkvm answers logs -f, exec with a terminal and
/// port-forward; `stop` ends it within the grace period with lkvm exiting
/// by itself; `rm` removes it.
fn lkvm_detached() {
    let fx = Fixture::new();
    let gate = fx.host_dir("gate", &[]);
    let www = fx.host_dir("www", &[("index.html", "served by lkvm\n")]);
    let m = fx
        .pod()
        .host_volume("gate", &gate)
        .host_volume("www", &www)
        .app(
            "ticker",
            "echo tick 0; while [ ! -e /gate/go ]; do sleep 0.1; done; echo tick 1; exec sleep 600",
        )
        .mount("gate", "/gate")
        .app_exec("httpd", json!(["httpd", "-f", "-p", "80", "-h", "/www"]))
        .mount_ro("www", "/www")
        .write("pod.json");
    let id = fx.detach(&m, &["--hypervisor", "lkvm", "--boot-timeout", "240"]);
    assert_eq!(fx.record(&id)["hypervisor"], "lkvm");

    let mut follow = fx.spawn_host_ctl(&["logs", "-f", &id, "ticker"]);
    follow.wait_for_stdout("tick 0", CMD);
    assert!(!follow.stdout().contains("tick 1"));
    fs::write(gate.join("go"), "").unwrap();
    follow.wait_for_stdout("tick 1", CMD);

    let tty = fx.host_ctl(&["exec", "-t", &id, "ticker", "--", "tty"], CMD);
    assert_eq!(tty.code, Some(0), "{}", tty.dump());
    assert!(tty.stdout.trim().starts_with("/dev/pts/"), "{}", tty.dump());

    let mut fwd = fx.spawn_host_ctl(&["port-forward", &id, "0:80"]);
    fwd.wait_for_stdout("forwarding 127.0.0.1:", CMD);
    let port: u16 = fwd
        .stdout()
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("a port");
    let body = http_get(port);
    assert!(body.contains("served by lkvm"), "{body}");
    fwd.signal(nix::sys::signal::Signal::SIGINT);
    fwd.finish(CMD);

    let start = Instant::now();
    let stop = fx.host_ctl(&["stop", "--timeout", "2", &id], Duration::from_secs(120));
    assert_eq!(stop.code, Some(0), "{}", stop.dump());
    let took = start.elapsed();
    let monitor = fs::read_to_string(pod_dir(&fx, &id).join("monitor.log")).unwrap();
    assert!(!monitor.contains("did not power off"), "{monitor}");
    assert!(
        took < Duration::from_secs(17),
        "stop took {took:?}\n{monitor}"
    );
    follow.finish(CMD);
    assert_eq!(fx.host_ctl(&["rm", &id], CMD).code, Some(0));
    fx.finish();
}

/// A sandbox pod under lkvm takes an app while it runs: lkvm's 9p server
/// runs in its jail, and the app's root and volume, bound into the apps
/// share after lkvm started, reach it (the jail's mounts are slaves of the
/// host's). The app writes through its volume; `app rm` takes it out.
fn lkvm_sandbox() {
    let fx = Fixture::new();
    let out = fx.host_dir("out", &[]);
    let m = fx
        .pod()
        .pod_field("sandbox", json!(true))
        .app("pause", "exec sleep 600")
        .write("sandbox.json");
    let id = fx.detach(&m, &["--hypervisor", "lkvm", "--boot-timeout", "240"]);
    let added = fx.write_manifest(
        "added.json",
        &json!({
            "volumes": [{"name": "out", "kind": "host", "source": out}],
            "apps": [{"name": "added", "rootfs": fx.root(),
                      "exec": ["/bin/sh", "-c", "echo added under lkvm; echo written > /out/file"],
                      "mountPoints": [{"volume": "out", "path": "/out"}]}]
        }),
    );
    let add = fx.host_ctl(&["app", "add", &id, added.to_str().unwrap()], CMD);
    assert_eq!(add.code, Some(0), "{}", add.dump());
    let logs = fx.host_ctl(&["logs", "-f", &id, "added"], CMD);
    assert_eq!(logs.stdout, "added under lkvm\n", "{}", logs.dump());
    assert_eq!(fs::read_to_string(out.join("file")).unwrap(), "written\n");
    let rm = fx.host_ctl(&["app", "rm", &id, "added"], CMD);
    assert_eq!(rm.code, Some(0), "{}", rm.dump());
    let stop = fx.host_ctl(&["rm", "-f", &id], Duration::from_secs(120));
    assert_eq!(stop.code, Some(0), "{}", stop.dump());
    fx.finish();
}

/// lkvm's user-mode network: a published port is relayed to the guest's
/// httpd; the guest's gateway does not lead to the nested host's loopback
/// (lkvm runs in the pod's own namespace) unless the pod asks for it.
fn lkvm_network() {
    use kvmpod_tests::net::{free_port, loopback_service};
    let fx = Fixture::new();
    let www = fx.host_dir("www", &[("index.html", "published by lkvm\n")]);
    let secret = loopback_service("nested-host-secret");
    let m = fx
        .pod()
        .host_volume("www", &www)
        .app_exec("httpd", json!(["httpd", "-f", "-p", "80", "-h", "/www"]))
        .mount_ro("www", "/www")
        .write("pod.json");
    let port = free_port();
    let publish = format!("{port}:80");
    let id = fx.detach(
        &m,
        &[
            "--hypervisor",
            "lkvm",
            "--boot-timeout",
            "240",
            "-p",
            &publish,
        ],
    );
    let body = http_get(port);
    assert!(body.contains("published by lkvm"), "{body}");
    let probe = format!("timeout 5 nc 192.168.33.1 {secret} </dev/null; ip addr show eth0");
    let got = fx.host_ctl(&["exec", &id, "httpd", "--", "sh", "-c", &probe], CMD);
    assert_eq!(got.code, Some(0), "{}", got.dump());
    assert!(!got.stdout.contains("nested-host-secret"), "{}", got.dump());
    assert!(
        got.stdout.contains("inet 192.168.33.15/24"),
        "{}",
        got.dump()
    );
    let rm = fx.host_ctl(&["rm", "-f", &id], Duration::from_secs(120));
    assert_eq!(rm.code, Some(0), "{}", rm.dump());

    let open = fx.detach(
        &m,
        &[
            "--hypervisor",
            "lkvm",
            "--boot-timeout",
            "240",
            "--net",
            "user,host-loopback",
        ],
    );
    let probe = format!("timeout 5 nc 192.168.33.1 {secret} </dev/null; true");
    let got = fx.host_ctl(&["exec", &open, "httpd", "--", "sh", "-c", &probe], CMD);
    assert!(got.stdout.contains("nested-host-secret"), "{}", got.dump());
    let rm = fx.host_ctl(&["rm", "-f", &open], Duration::from_secs(120));
    assert_eq!(rm.code, Some(0), "{}", rm.dump());
    fx.finish();
}

fn http_get(port: u16) -> String {
    use std::io::{Read, Write};
    let mut http = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    http.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    http.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    http.read_to_string(&mut body).unwrap();
    body
}

/// lkvm never spins after the guest is over: an agent failure before vsock
/// (a module that cannot load), a guest kernel panic (an init that exits)
/// and `kill` of every app all end lkvm without host-ctl killing it.
fn lkvm_ends_on_failures() {
    let fx = Fixture::new();
    let m = fx
        .one_app("a", "echo ready; exec sleep 600")
        .write("pod.json");

    let modules = fx.broken_modules();
    let start = Instant::now();
    let broken = fx.run(
        &[
            "--hypervisor",
            "lkvm",
            "--modules-dir",
            modules.to_str().unwrap(),
            m.to_str().unwrap(),
        ],
        POD_LIMIT,
    );
    assert_eq!(broken.code, Some(125), "{}", broken.dump());
    assert!(broken.stderr.contains("the VM exited"), "{}", broken.dump());
    assert!(
        broken
            .stderr
            .contains("the agent reported: loading kernel modules"),
        "{}",
        broken.dump()
    );
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );

    let init = fx.path().join("exits");
    fs::write(&init, kvmpod_tests::euid_probe()).unwrap();
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755)).unwrap();
    let panic = fx.run(
        &[
            "--hypervisor",
            "lkvm",
            "--agent",
            init.to_str().unwrap(),
            m.to_str().unwrap(),
        ],
        POD_LIMIT,
    );
    assert_eq!(panic.code, Some(125), "{}", panic.dump());
    assert!(panic.stderr.contains("the VM exited"), "{}", panic.dump());
    assert!(panic.stderr.contains("kernel panic"), "{}", panic.dump());

    let id = fx.detach(&m, &["--hypervisor", "lkvm", "--boot-timeout", "240"]);
    let kill = fx.host_ctl(&["kill", &id, "--signal", "KILL"], CMD);
    assert_eq!(kill.code, Some(0), "{}", kill.dump());
    let rec = fx.wait_until_exited(&id, Duration::from_secs(60));
    assert_eq!(rec["apps"][0]["exitCode"], 137, "{rec}");
    let monitor = fs::read_to_string(pod_dir(&fx, &id).join("monitor.log")).unwrap();
    assert!(!monitor.contains("did not power off"), "{monitor}");
    fx.finish();
}

/// A symlink in a shared directory that points outside it. Inside the
/// guest, its own kernel resolves it (in the guest's namespace). kvmtool's
/// 9p server, though, joins each path it is sent to the share and follows
/// symlinks on the host, so a guest speaking 9p itself could read the
/// target: lkvm therefore runs in a jail where the target does not exist.
/// Its view is checked from inside its mount namespace, where paths
/// resolve as lkvm's own system calls do.
fn lkvm_symlink_jail() {
    let fx = Fixture::new();
    let secret = fx.host_dir("secret", &[("key.txt", "host secret\n")]);
    let share = fx.host_dir("share", &[("inside.txt", "shared\n")]);
    symlink(secret.join("key.txt"), share.join("escape")).unwrap();
    symlink("../secret/key.txt", share.join("relative-escape")).unwrap();
    let m = fx
        .one_app(
            "reader",
            &[
                equals("inside", "cat /share/inside.txt", "shared"),
                check(
                    "escape-not-host",
                    "! grep -q 'host secret' /share/escape 2>/dev/null",
                ),
                check(
                    "relative-not-host",
                    "! grep -q 'host secret' /share/relative-escape 2>/dev/null",
                ),
                "exec sleep 600".into(),
            ]
            .concat(),
        )
        .host_volume("share", &share)
        .mount("share", "/share")
        .write("pod.json");
    let id = fx.detach(&m, &["--hypervisor", "lkvm", "--boot-timeout", "240"]);
    let vm = fx.record(&id)["vm"]["pid"].as_i64().expect("a VM pid") as i32;
    // What lkvm sees: the share, but neither the symlinks' targets nor
    // anything else of the host.
    let sees = |p: &Path| lkvm_can_read(vm, p);
    assert!(
        sees(&share.join("inside.txt")),
        "lkvm cannot read its share"
    );
    assert!(
        !sees(&share.join("escape")),
        "lkvm follows the absolute symlink out"
    );
    assert!(
        !sees(&share.join("relative-escape")),
        "lkvm follows the relative symlink out"
    );
    assert!(!sees(Path::new("/etc/passwd")), "lkvm sees the host's /etc");
    assert!(!sees(&secret.join("key.txt")), "lkvm sees the secret");
    // What the host sees through the same symlink.
    assert_eq!(
        fs::read_to_string(share.join("escape")).unwrap(),
        "host secret\n"
    );
    let logs = wait_for_log(&fx, &id, "relative-not-host");
    assert_checks(
        &logs,
        &logs,
        &["inside", "escape-not-host", "relative-not-host"],
    );
    let stop = fx.host_ctl(&["stop", "--timeout", "1", &id], Duration::from_secs(120));
    assert_eq!(stop.code, Some(0), "{}", stop.dump());
    fx.finish();
}

/// Whether process `pid`, with its own mounts and root, can open `path`:
/// a child joins its mount namespace (which makes the namespace's root its
/// own) and tries, making no allocation after the fork.
fn lkvm_can_read(pid: i32, path: &Path) -> bool {
    use nix::fcntl::{open, OFlag};
    use nix::sched::{setns, CloneFlags};
    use nix::sys::stat::Mode;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    let ns = fs::File::open(format!("/proc/{pid}/ns/mnt")).expect("lkvm's mount namespace");
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: the child only makes system calls (setns, open, _exit) on
    // values prepared before the fork; it allocates nothing and takes no
    // lock another thread could hold.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let code = match setns(&ns, CloneFlags::CLONE_NEWNS) {
                Err(_) => 2,
                Ok(()) => match open(c_path.as_c_str(), OFlag::O_RDONLY, Mode::empty()) {
                    Ok(_) => 0,
                    Err(_) => 1,
                },
            };
            // SAFETY: _exit ends the child without running the parent's
            // destructors or atexit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None).expect("waitpid") {
            WaitStatus::Exited(_, 0) => true,
            WaitStatus::Exited(_, 1) => false,
            other => panic!("could not enter lkvm's mount namespace: {other:?}"),
        },
    }
}

fn wait_for_log(fx: &Fixture, id: &str, needle: &str) -> String {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let logs = fx.host_ctl(&["logs", id], CMD);
        if logs.stdout.contains(needle) {
            return logs.stdout;
        }
        assert!(Instant::now() < until, "no {needle:?}\n{}", logs.dump());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// QEMU on a host where KVM and vhost-vsock work: `--accel auto` and
/// `--vsock auto` pick them, and four pods started at once each get their
/// own CID and are reached over AF_VSOCK; `--vsock hybrid` is honoured.
fn qemu_kvm_af_vsock() {
    let fx = Fixture::new();
    let manifests: Vec<_> = (0..4)
        .map(|i| {
            fx.one_app(
                &format!("app-{i}"),
                &format!("echo pod {i}; exec sleep 600"),
            )
            .write(&format!("pod{i}.json"))
        })
        .collect();
    let runs: Vec<_> = manifests
        .iter()
        // One vCPU of an emulated host runs four guests: boots are slow.
        // --verbose: each says its choices (otherwise said once).
        .map(|m| {
            fx.spawn(&[
                "--verbose",
                "--detach",
                "--boot-timeout",
                "240",
                "--memory",
                "256",
                m.to_str().unwrap(),
            ])
        })
        .collect();
    let mut cids = Vec::new();
    let mut ids = Vec::new();
    for (i, r) in runs.into_iter().enumerate() {
        let out = r.finish(POD_LIMIT);
        assert_eq!(out.code, Some(0), "{}", out.dump());
        assert!(out.stderr.contains("accelerator kvm: "), "{}", out.dump());
        assert!(
            out.stderr.contains("vsock vhost (AF_VSOCK)"),
            "{}",
            out.dump()
        );
        // The nested host has no external network for passt: a pod that
        // did not choose its network gets none, and is told.
        assert!(
            out.stderr
                .contains("network none: this host has no IPv4 default route"),
            "{}",
            out.dump()
        );
        let id = out.stdout.trim().to_string();
        let rec: Value = fx.record(&id);
        assert_eq!(rec["accel"], "kvm", "{rec}");
        assert_eq!(rec["endpoint"]["kind"], "vhost", "{rec}");
        cids.push(rec["cid"].as_u64().unwrap());
        let logs = fx.host_ctl(&["logs", &id], CMD);
        assert_eq!(logs.stdout, format!("pod {i}\n"), "{}", logs.dump());
        ids.push(id);
    }
    let mut distinct = cids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "CIDs {cids:?}");
    for (i, id) in ids.iter().enumerate() {
        let ex = fx.host_ctl(&["exec", id, &format!("app-{i}"), "--", "hostname"], CMD);
        assert_eq!(ex.code, Some(0), "{}", ex.dump());
    }
    // Asked for by name, hybrid vsock still works where AF_VSOCK does.
    let hybrid = fx.detach(
        &manifests[0],
        &[
            "--vsock",
            "hybrid",
            "--boot-timeout",
            "240",
            "--memory",
            "256",
        ],
    );
    assert_eq!(fx.record(&hybrid)["endpoint"]["kind"], "hybrid");
    let logs = fx.host_ctl(&["logs", &hybrid], CMD);
    assert_eq!(logs.stdout, "pod 0\n", "{}", logs.dump());
    ids.push(hybrid);
    for id in &ids {
        let stop = fx.host_ctl(&["stop", "--timeout", "1", id], Duration::from_secs(120));
        assert_eq!(stop.code, Some(0), "{}", stop.dump());
    }
    assert_eq!(fx.host_ctl(&["gc"], CMD).code, Some(0));
    fx.finish();
}
