//! Boot tests of the runtime API: detached pods and every command that
//! talks to them, in one long-lived pod, plus monitor recovery.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kvmpod_tests::{Fixture, POD_LIMIT};
use serde_json::{json, Value};

const CMD: Duration = Duration::from_secs(60);

fn state(fx: &Fixture, id: &str) -> Value {
    let path = fx.state_dir().join("pods").join(id).join("state.json");
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// One detached pod exercises run --detach, list, status, logs (-f, after
/// exit, streams apart), exec (-i, -t, exit code), attach, stats and an
/// OOM event, port-forward, kill's errors, stop (graceful and at the
/// timeout), 50 concurrent status calls during a `logs -f`, rm and gc.
#[test]
fn a_detached_pod_answers_every_command() {
    let fx = Fixture::new();
    let root = fx.rootfs("rootfs");
    let out_dir = fx.host_dir("out", &[]);
    let www = fx.host_dir("www", &[("index.html", "<h1>served from the guest</h1>\n")]);
    let manifest = fx.write_manifest(
        "pod.json",
        &json!({
            "volumes": [
                {"name": "out", "kind": "host", "source": out_dir},
                {"name": "www", "kind": "host", "source": www, "readOnly": true}
            ],
            "apps": [
                {"name": "ticker", "rootfs": root, "exec": ["/bin/sh", "-c",
                    "i=0; while [ $i -lt 6 ]; do echo tick $i; echo tock $i >&2; i=$((i+1)); sleep 1; done"]},
                {"name": "shell", "rootfs": root, "exec": ["/bin/sh", "-c",
                    "trap 'echo graceful > /out/term.txt; exit 0' TERM; while true; do sleep 0.2; done"],
                 "mountPoints": [{"volume": "out", "path": "/out"}]},
                {"name": "stubborn", "rootfs": root, "exec": ["/bin/sh", "-c",
                    "trap '' TERM; while true; do sleep 0.2; done"]},
                {"name": "httpd", "rootfs": root, "exec": ["httpd", "-f", "-p", "80", "-h", "/www"],
                 "mountPoints": [{"volume": "www", "path": "/www"}]},
                {"name": "hog", "rootfs": root, "resources": {"memoryLimit": "16M"},
                 "exec": ["/bin/sh", "-c", "sleep 2; s=$(head -c 64000000 /dev/zero | tr '\\0' x); echo survived ${#s}"]},
                {"name": "echo", "rootfs": root, "stdin": true, "exec": ["/bin/sh", "-c",
                    "while read l; do echo got: $l; done; echo eof"]}
            ]
        }),
    );

    // run --detach returns the ID once the agent answered.
    let out = fx.run(&["--detach", manifest.to_str().unwrap()], POD_LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let id = out.stdout.trim().to_string();
    assert_eq!(id.len(), 36, "{}", out.dump());
    assert_eq!(state(&fx, &id)["state"], "running");

    // list and status show it running.
    let list = fx.host_ctl(&["list"], CMD);
    assert!(
        list.stdout.contains(&format!("{}  running", &id[..8])),
        "{}",
        list.dump()
    );
    let st = fx.host_ctl(&["status", &id[..8], "--format", "json"], CMD);
    assert_eq!(st.code, Some(0), "{}", st.dump());
    let st: Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(st["state"], "running");
    let ticker = st["live"]["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "ticker")
        .unwrap()
        .clone();
    assert!(ticker["pid"].as_i64().unwrap() > 1, "{st}");
    assert!(st["live"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "agent-ready"));

    // logs -f follows the ticker as it prints, once a second.
    let mut follow = fx.spawn_host_ctl(&["logs", "-f", &id, "ticker"]);
    follow.wait_for_stdout("tick 1", Duration::from_secs(60));
    let first_seen = Instant::now();

    // 50 concurrent status calls while that logs -f runs: all answer.
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let mut c = fx.command(&["status", &id]);
            c.stdout(Stdio::null()).stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for c in calls {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    follow.wait_for_stdout("tick 5", Duration::from_secs(60));
    assert!(
        first_seen.elapsed() >= Duration::from_secs(2),
        "logs -f did not follow over time"
    );
    follow.signal(libc::SIGINT);
    let followed = follow.finish(CMD);
    let ticks: Vec<&str> = followed.stdout.lines().collect();
    assert_eq!(
        ticks,
        ["tick 0", "tick 1", "tick 2", "tick 3", "tick 4", "tick 5"],
        "{}",
        followed.dump()
    );

    // exec: output and exit code; stdin with -i; a terminal with -t.
    let ex = fx.host_ctl(
        &[
            "exec",
            &id,
            "shell",
            "--",
            "sh",
            "-c",
            "echo hi; echo err >&2; exit 3",
        ],
        CMD,
    );
    assert_eq!(ex.code, Some(3), "{}", ex.dump());
    assert_eq!(ex.stdout, "hi\n");
    assert_eq!(ex.stderr, "err\n");
    let mut cat = fx.command(&["exec", "-i", &id, "shell", "--", "cat"]);
    cat.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cat.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let catted = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&catted.stdout), "through stdin\n");
    assert!(catted.status.success());
    let tty = fx.host_ctl(&["exec", "-t", &id, "shell", "--", "tty"], CMD);
    assert_eq!(tty.code, Some(0), "{}", tty.dump());
    assert!(tty.stdout.trim().starts_with("/dev/pts/"), "{}", tty.dump());
    let missing = fx.host_ctl(&["exec", &id, "shell", "--", "no-such-program"], CMD);
    assert_eq!(missing.code, Some(127), "{}", missing.dump());
    assert!(missing.stderr.contains("not found"), "{}", missing.dump());

    // attach feeds an app's stdin and follows its output until it exits.
    let mut attach = fx.command(&["attach", &id, "echo"]);
    attach
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = attach.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(b"one\ntwo\n").unwrap();
    drop(stdin);
    let attached = run_wait(child, CMD);
    assert!(attached.contains("got: one\ngot: two\neof\n"), "{attached}");

    // stats: a running app uses memory; the hog is OOM-killed at its limit.
    let stats = fx.host_ctl(&["stats", &id, "--format", "json"], CMD);
    assert_eq!(stats.code, Some(0), "{}", stats.dump());
    let stats: Value = serde_json::from_str(&stats.stdout).unwrap();
    let shell = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"] == "shell")
        .unwrap();
    assert!(shell["memoryCurrent"].as_u64().unwrap() > 0, "{stats}");
    let until = Instant::now() + Duration::from_secs(90);
    let events = loop {
        let ev = fx.host_ctl(&["events", "--no-follow", "--format", "json", &id], CMD);
        let hog_exited = ev
            .stdout
            .lines()
            .any(|l| l.contains("\"app-exited\"") && l.contains("\"hog\""));
        if (ev.stdout.contains("app-oom-killed") && hog_exited) || Instant::now() > until {
            break ev;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let kinds: Vec<Value> = events
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        kinds
            .iter()
            .any(|e| e["kind"] == "app-oom-killed" && e["app"] == "hog"),
        "{}",
        events.dump()
    );
    assert!(kinds
        .iter()
        .any(|e| e["kind"] == "app-exited" && e["app"] == "hog" && e["exitCode"] == 137));
    assert!(kinds
        .iter()
        .any(|e| e["kind"] == "app-started" && e["app"] == "httpd"));

    // port-forward: the guest's httpd, fetched from the host.
    let mut fwd = fx.spawn_host_ctl(&["port-forward", &id, "0:80"]);
    fwd.wait_for_stdout("forwarding 127.0.0.1:", CMD);
    let port: u16 = fwd
        .stdout()
        .split("127.0.0.1:")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut http = TcpStream::connect(("127.0.0.1", port)).unwrap();
    http.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    http.write_all(b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    http.read_to_string(&mut body).unwrap();
    assert!(
        body.starts_with("HTTP/1.") && body.contains(" 200 OK"),
        "{body}"
    );
    assert!(body.contains("<h1>served from the guest</h1>"), "{body}");
    fwd.signal(libc::SIGINT);
    fwd.finish(CMD);

    // kill: bad input is refused clearly.
    let bad = fx.host_ctl(&["kill", &id, "shell", "--signal", "99"], CMD);
    assert_ne!(bad.code, Some(0));
    assert!(bad.stderr.contains("not a signal number"), "{}", bad.dump());
    let nosuch = fx.host_ctl(&["kill", &id, "nosuch"], CMD);
    assert_eq!(nosuch.code, Some(125));
    assert!(
        nosuch.stderr.contains("no app named \"nosuch\""),
        "{}",
        nosuch.dump()
    );

    // stop: the graceful app writes its file in the grace period; the one
    // ignoring SIGTERM is killed when the timeout ends.
    let start = Instant::now();
    let stop = fx.host_ctl(&["stop", "--timeout", "4", &id], Duration::from_secs(120));
    assert_eq!(stop.code, Some(0), "{}", stop.dump());
    assert!(
        start.elapsed() >= Duration::from_secs(4),
        "stop did not wait for the grace period"
    );
    assert_eq!(
        fs::read_to_string(out_dir.join("term.txt")).unwrap(),
        "graceful\n"
    );
    let rec = state(&fx, &id);
    assert_eq!(rec["state"], "exited");
    assert_eq!(rec["exitReason"], "stopped by host-ctl stop");
    let app = |name: &str| {
        rec["apps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(app("shell")["exitCode"], 0);
    assert_eq!(app("stubborn")["exitCode"], 137);
    assert_eq!(app("ticker")["exitCode"], 0);

    // After the pod ended, every line is still there, stdout and stderr
    // apart.
    let logs = fx.host_ctl(&["logs", &id, "ticker"], CMD);
    assert_eq!(
        logs.stdout,
        "tick 0\ntick 1\ntick 2\ntick 3\ntick 4\ntick 5\n",
        "{}",
        logs.dump()
    );
    assert_eq!(
        logs.stderr,
        "tock 0\ntock 1\ntock 2\ntock 3\ntock 4\ntock 5\n",
        "{}",
        logs.dump()
    );
    let only_err = fx.host_ctl(
        &["logs", "--stream", "stderr", "--tail", "2", &id, "ticker"],
        CMD,
    );
    assert_eq!(only_err.stdout, "");
    assert_eq!(only_err.stderr, "tock 4\ntock 5\n");

    // rm and gc leave nothing behind.
    assert_eq!(fx.host_ctl(&["rm", &id], CMD).code, Some(0));
    assert_eq!(fx.pods_created(), 0);
    fx.assert_no_leftovers(Duration::from_secs(5));
}

fn run_wait(child: std::process::Child, limit: Duration) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(limit)
        .expect("attach did not finish")
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Nomad's RecoverTask: when the monitor is killed, the next command
/// re-attaches a new one and reaches the pod; when the VM went too, the
/// pod is reported exited with the reason, and gc leaves nothing behind.
#[test]
fn a_killed_monitor_is_recovered_or_its_pod_marked_exited() {
    let fx = Fixture::new();
    let root = fx.rootfs("rootfs");
    let manifest = fx.write_manifest(
        "pod.json",
        &json!({"apps": [{"name": "sleeper", "rootfs": root, "exec": ["/bin/sh", "-c", "echo ready; exec sleep 600"]}]}),
    );
    let out = fx.run(&["--detach", manifest.to_str().unwrap()], POD_LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let id = out.stdout.trim().to_string();
    let kill9 = |pid: i64| unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    };

    let first = state(&fx, &id)["monitor"]["pid"].as_i64().unwrap();
    kill9(first);
    std::thread::sleep(Duration::from_millis(300));
    let st = fx.host_ctl(&["status", &id, "--format", "json"], CMD);
    assert_eq!(st.code, Some(0), "{}", st.dump());
    let st: Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(st["live"]["apps"][0]["state"], "running", "{st}");
    let second = state(&fx, &id)["monitor"]["pid"].as_i64().unwrap();
    assert_ne!(first, second, "no new monitor adopted the pod");
    let logs = fx.host_ctl(&["logs", &id], CMD);
    assert_eq!(logs.stdout, "ready\n", "{}", logs.dump());

    // Now the monitor and the VM together.
    kill9(second);
    kill9(state(&fx, &id)["vm"]["pid"].as_i64().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let list = fx.host_ctl(&["list"], CMD);
    assert!(
        list.stdout.contains(&format!("{}  exited", &id[..8])),
        "{}",
        list.dump()
    );
    let rec = state(&fx, &id);
    let reason = rec["exitReason"].as_str().unwrap();
    assert!(
        reason.contains("died") && reason.contains("is gone"),
        "{reason}"
    );

    let gc = fx.host_ctl(&["gc"], CMD);
    assert!(
        gc.stdout.contains(&format!("removed {id}")),
        "{}",
        gc.dump()
    );
    assert_eq!(fx.pods_created(), 0);
    fx.assert_no_leftovers(Duration::from_secs(5));
}
