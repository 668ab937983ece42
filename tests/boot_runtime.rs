//! Boot tests of the runtime API: detached pods and every command that
//! talks to them, in one long-lived pod, plus monitor recovery and forced
//! removal.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kvmpod_tests::{Fixture, Running, CMD};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// The long-lived pod: each app serves one part of the test.
fn busy_pod(fx: &Fixture, gate: &Path, out_dir: &Path, www: &Path) -> std::path::PathBuf {
    fx.pod()
        .host_volume("gate", gate)
        .host_volume("out", out_dir)
        .volume(json!({"name": "www", "kind": "host", "source": www, "readOnly": true}))
        // Prints once, then the rest only when the test opens the gate, so
        // `logs -f` is shown to follow without timing anything.
        .app(
            "ticker",
            "echo tick 0; echo tock 0 >&2; while [ ! -e /gate/go ]; do sleep 0.1; done; \
             i=1; while [ $i -lt 6 ]; do echo tick $i; echo tock $i >&2; i=$((i+1)); sleep 0.1; done",
        )
        .mount("gate", "/gate")
        .app(
            "shell",
            "trap 'echo graceful > /out/term.txt; exit 0' TERM; trap 'echo got USR1' USR1; \
             while true; do sleep 0.2; done",
        )
        .mount("out", "/out")
        .app("stubborn", "trap '' TERM; while true; do sleep 0.2; done")
        .app_exec("httpd", json!(["httpd", "-f", "-p", "80", "-h", "/www"]))
        .mount("www", "/www")
        .app(
            "hog",
            "sleep 2; s=$(head -c 64000000 /dev/zero | tr '\\0' x); echo survived ${#s}",
        )
        .set("resources", json!({"memoryLimit": "16M"}))
        // A child peaks at 24 MB and exits; then it holds 8 MB.
        .app(
            "worker",
            "sh -c 'y=$(head -c 24000000 /dev/zero | tr \"\\0\" z); echo peaked ${#y}'; \
             x=$(head -c 8000000 /dev/zero | tr '\\0' y); echo holding ${#x}; while true; do sleep 0.2; done",
        )
        .set("resources", json!({"memoryLimit": "64M", "pidsLimit": 20}))
        .app("echo", "while read l; do echo got: $l; done; echo eof")
        .set("stdin", json!(true))
        .write("pod.json")
}

/// One detached pod exercises run --detach, list, status, logs (-f, after
/// exit, streams apart), exec (-i, -t, exit code), attach, kill, stats and
/// an OOM event, events --follow, port-forward, stop (graceful and at the
/// timeout), 50 concurrent status calls during a `logs -f`, rm.
#[test]
fn a_detached_pod_answers_every_command() {
    let fx = Fixture::new();
    let gate = fx.host_dir("gate", &[]);
    let out_dir = fx.host_dir("out", &[]);
    let www = fx.host_dir("www", &[("index.html", "<h1>served from the guest</h1>\n")]);
    let manifest = busy_pod(&fx, &gate, &out_dir, &www);

    let id = fx.detach(&manifest, &[]);
    assert_eq!(fx.record(&id)["state"], "running");
    let events = fx.spawn_host_ctl(&["events", "--format", "json", &id]);
    list_and_status(&fx, &id);
    follow_logs(&fx, &id, &gate);
    exec_and_attach(&fx, &id);
    kill_reaches_the_app(&fx, &id);
    stats_and_oom(&fx, &id);
    port_forward(&fx, &id);
    stop_gracefully(&fx, &id, &out_dir);
    events_followed(events);
    logs_after_exit(&fx, &id);

    assert_eq!(fx.host_ctl(&["rm", &id], CMD).code, Some(0));
    assert_eq!(fx.pods_created(), 0);
    fx.finish();
}

fn list_and_status(fx: &Fixture, id: &str) {
    let list = fx.host_ctl(&["list"], CMD);
    assert!(
        kvmpod_tests::list_cell(&list.stdout, id, "STATE").as_deref() == Some("running"),
        "{}",
        list.dump()
    );
    let json_list = fx.host_ctl(&["list", "--format", "json"], CMD);
    let pods: Value = serde_json::from_str(&json_list.stdout).expect("list --format json");
    let pods = pods.as_array().expect("a list of pods");
    assert_eq!(pods.len(), 1, "{}", json_list.dump());
    kvmpod_tests::table_and_json_agree(
        &list.stdout,
        pods,
        &[
            ("ID", "id"),
            ("NAME", "name?"),
            ("STATE", "state"),
            ("CREATED", "created"),
            ("APPS", "apps"),
            ("EXIT", "exit"),
            ("PORTS", "ports"),
        ],
    );
    assert_eq!(pods[0]["id"], id);
    assert_eq!(pods[0]["state"], "running");
    assert_eq!(pods[0]["apps"].as_array().map(Vec::len), Some(7));

    let st = fx.host_ctl(&["status", &id[..8], "--format", "json"], CMD);
    assert_eq!(st.code, Some(0), "{}", st.dump());
    let st: Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(st["state"], "running");
    let ticker = &st["live"]["apps"]
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

    // --format templates: the same fields as the JSON, a line per item.
    let line = fx.host_ctl(&["list", "--format", "{{.ID}} {{.State}}"], CMD);
    assert_eq!(line.stdout, format!("{id} running\n"), "{}", line.dump());
    let state = fx.host_ctl(
        &["status", id, "--format", "{{.State}}/{{.Live.PodState}}"],
        CMD,
    );
    assert!(state.stdout.starts_with("running/"), "{}", state.dump());
    let table = fx.host_ctl(&["stats", id], CMD);
    let json = fx.host_ctl(&["stats", id, "--format", "json"], CMD);
    let json: Value = serde_json::from_str(&json.stdout).expect("stats --format json");
    kvmpod_tests::table_and_json_agree(
        &table.stdout,
        json["apps"].as_array().expect("the apps' stats"),
        &[
            ("APP", "app"),
            ("MEMORY", "memoryCurrent"),
            ("PEAK", "memoryPeak"),
            ("LIMIT", "memoryMax"),
            ("CPU", "cpuUsageUsec"),
            ("PIDS", "pidsCurrent"),
            ("OOM-KILLS", "oomKills"),
        ],
    );
    let names = fx.host_ctl(&["stats", id, "--format", "{{.App}}"], CMD);
    assert!(
        names.stdout.lines().all(|l| !l.is_empty()),
        "{}",
        names.dump()
    );
    assert!(
        names.stdout.lines().any(|l| l == "ticker"),
        "{}",
        names.dump()
    );
    let bad = fx.host_ctl(&["list", "--format", "{{range .Apps}}"], CMD);
    assert_eq!(bad.code, Some(2), "{}", bad.dump());
    assert!(bad.stderr.contains("only fields"), "{}", bad.dump());
}

/// `logs -f` shows the first line, then (after the gate opens) the rest as
/// the app prints it; 50 status calls meanwhile all answer.
fn follow_logs(fx: &Fixture, id: &str, gate: &Path) {
    let mut follow = fx.spawn_host_ctl(&["logs", "-f", id, "ticker"]);
    follow.wait_for_stdout("tick 0", Duration::from_secs(60));
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let mut c = fx.command(&["status", id]);
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
    assert!(
        !follow.stdout().contains("tick 1"),
        "the app printed past its gate"
    );
    fs::write(gate.join("go"), "").unwrap();
    follow.wait_for_stdout("tick 5", Duration::from_secs(60));
    follow.signal(Signal::SIGINT);
    let followed = follow.finish(CMD);
    let ticks: Vec<&str> = followed.stdout.lines().collect();
    assert_eq!(
        ticks,
        ["tick 0", "tick 1", "tick 2", "tick 3", "tick 4", "tick 5"],
        "{}",
        followed.dump()
    );
}

/// exec: output and exit code; stdin with -i; a terminal with -t; a
/// missing program. attach feeds an app's stdin and follows its output.
fn exec_and_attach(fx: &Fixture, id: &str) {
    let ex = fx.host_ctl(
        &[
            "exec",
            id,
            "shell",
            "--",
            "sh",
            "-c",
            "echo hi; echo err >&2; exit 3",
        ],
        CMD,
    );
    assert_eq!(ex.code, Some(3), "{}", ex.dump());
    assert_eq!((ex.stdout.as_str(), ex.stderr.as_str()), ("hi\n", "err\n"));
    let mut cat = fx.command(&["exec", "-i", id, "shell", "--", "cat"]);
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
    let tty = fx.host_ctl(&["exec", "-t", id, "shell", "--", "tty"], CMD);
    assert_eq!(tty.code, Some(0), "{}", tty.dump());
    assert!(tty.stdout.trim().starts_with("/dev/pts/"), "{}", tty.dump());
    let as_other = fx.host_ctl(
        &[
            "exec",
            "-u",
            "1000:100",
            "-w",
            "/tmp",
            id,
            "shell",
            "--",
            "sh",
            "-c",
            "id -u; id -g; pwd",
        ],
        CMD,
    );
    assert_eq!(as_other.code, Some(0), "{}", as_other.dump());
    assert_eq!(as_other.stdout, "1000\n100\n/tmp\n", "{}", as_other.dump());
    let relative = fx.host_ctl(&["exec", "-w", "tmp", id, "shell", "--", "true"], CMD);
    assert_ne!(relative.code, Some(0), "{}", relative.dump());
    assert!(
        relative.stderr.contains("must be an absolute path"),
        "{}",
        relative.dump()
    );
    let missing = fx.host_ctl(&["exec", id, "shell", "--", "no-such-program"], CMD);
    assert_eq!(missing.code, Some(127), "{}", missing.dump());
    assert!(missing.stderr.contains("not found"), "{}", missing.dump());

    let mut attach = fx.command(&["attach", id, "echo"]);
    attach
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = attach.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"one\ntwo\n").unwrap();
    drop(stdin);
    let attached = wait_output(child, CMD);
    assert!(attached.contains("got: one\ngot: two\neof\n"), "{attached}");
}

fn wait_output(child: std::process::Child, limit: Duration) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(limit)
        .expect("the command did not finish")
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A signal reaches the app (its trap runs); bad input is refused clearly.
fn kill_reaches_the_app(fx: &Fixture, id: &str) {
    let k = fx.host_ctl(&["kill", id, "shell", "--signal", "USR1"], CMD);
    assert_eq!(k.code, Some(0), "{}", k.dump());
    fx.wait_for_log(id, "shell", "got USR1");
    let bad = fx.host_ctl(&["kill", id, "shell", "--signal", "99"], CMD);
    assert_ne!(bad.code, Some(0));
    assert!(bad.stderr.contains("not a signal number"), "{}", bad.dump());
    let nosuch = fx.host_ctl(&["kill", id, "nosuch"], CMD);
    assert_eq!(nosuch.code, Some(125));
    assert!(
        nosuch.stderr.contains("no app named \"nosuch\""),
        "{}",
        nosuch.dump()
    );
}

fn app_stats(fx: &Fixture, id: &str, app: &str) -> Value {
    let stats = fx.host_ctl(&["stats", id, "--format", "json"], CMD);
    assert_eq!(stats.code, Some(0), "{}", stats.dump());
    let stats: Value = serde_json::from_str(&stats.stdout).unwrap();
    stats["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"] == app)
        .unwrap_or_else(|| panic!("no stats for {app}: {stats}"))
        .clone()
}

/// stats: the worker's memory (current, peak, limit), CPU and pids; the
/// hog is OOM-killed at its limit, counted, and reported as an event.
fn stats_and_oom(fx: &Fixture, id: &str) {
    fx.wait_for_log(id, "worker", "holding 8000000");
    let w = app_stats(fx, id, "worker");
    let n = |k: &str| w[k].as_u64().unwrap_or_else(|| panic!("no {k}: {w}"));
    assert!(n("memoryCurrent") > 4 << 20, "{w}");
    assert!(n("memoryPeak") > 20 << 20, "{w}");
    assert!(n("memoryPeak") > n("memoryCurrent") + (8 << 20), "{w}");
    assert_eq!(n("memoryMax"), 64 << 20, "{w}");
    assert!(n("cpuUsageUsec") > 0, "{w}");
    assert!((1..=20).contains(&n("pidsCurrent")), "{w}");
    assert_eq!(n("oomKills"), 0, "{w}");

    let until = Instant::now() + Duration::from_secs(90);
    let events: Vec<Value> = loop {
        let ev = fx.host_ctl(&["events", "--no-follow", "--format", "json", id], CMD);
        let events: Vec<Value> = ev
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let seen = |kind: &str| {
            events
                .iter()
                .any(|e| e["kind"] == kind && e["app"] == "hog")
        };
        if seen("app-oom-killed") && seen("app-exited") {
            break events;
        }
        assert!(Instant::now() < until, "no OOM kill of hog\n{}", ev.dump());
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(events
        .iter()
        .any(|e| e["kind"] == "app-exited" && e["app"] == "hog" && e["exitCode"] == 137));
    assert!(events
        .iter()
        .any(|e| e["kind"] == "app-started" && e["app"] == "httpd"));
    let hog = app_stats(fx, id, "hog");
    assert!(hog["oomKills"].as_u64().unwrap_or(0) >= 1, "{hog}");
    assert_eq!(hog["memoryMax"], 16 << 20, "{hog}");
}

/// port-forward: the guest's httpd, fetched from the host.
fn port_forward(fx: &Fixture, id: &str) {
    let mut fwd = fx.spawn_host_ctl(&["port-forward", id, "0:80"]);
    fwd.wait_for_stdout("forwarding 127.0.0.1:", CMD);
    let port: u16 = fwd
        .stdout()
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {:?}", fwd.stdout()));
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
    fwd.signal(Signal::SIGINT);
    fwd.finish(CMD);
}

/// stop: the graceful app writes its file in the grace period; the one
/// ignoring SIGTERM is killed when the timeout ends (exit 137).
fn stop_gracefully(fx: &Fixture, id: &str, out_dir: &Path) {
    let stop = fx.host_ctl(&["stop", "--timeout", "4", id], Duration::from_secs(120));
    assert_eq!(stop.code, Some(0), "{}", stop.dump());
    assert_eq!(
        fs::read_to_string(out_dir.join("term.txt")).unwrap(),
        "graceful\n"
    );
    let rec = fx.record(id);
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
}

/// `events` (following) saw what happened after it started, and ended
/// with the pod.
fn events_followed(events: Running) {
    let out = events.finish(CMD);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let kinds: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (kind, app) in [
        ("app-started", "ticker"),
        ("app-oom-killed", "hog"),
        ("app-exited", "stubborn"),
        ("pod-stopping", ""),
        ("pod-exited", ""),
    ] {
        assert!(
            kinds
                .iter()
                .any(|e| e["kind"] == kind && e["app"].as_str().unwrap_or("") == app),
            "no {kind} {app} event\n{}",
            out.dump()
        );
    }
    assert_eq!(
        kinds.last().map(|e| e["kind"].clone()),
        Some(json!("pod-exited"))
    );
}

/// After the pod ended, every line is still there, stdout and stderr apart.
fn logs_after_exit(fx: &Fixture, id: &str) {
    let logs = fx.host_ctl(&["logs", id, "ticker"], CMD);
    assert_eq!(
        (logs.stdout.as_str(), logs.stderr.as_str()),
        (
            "tick 0\ntick 1\ntick 2\ntick 3\ntick 4\ntick 5\n",
            "tock 0\ntock 1\ntock 2\ntock 3\ntock 4\ntock 5\n"
        ),
        "{}",
        logs.dump()
    );
    let only_err = fx.host_ctl(
        &["logs", "--stream", "stderr", "--tail", "2", id, "ticker"],
        CMD,
    );
    assert_eq!(only_err.stdout, "");
    assert_eq!(only_err.stderr, "tock 4\ntock 5\n");
}

/// SIGKILLs `pid` and waits until it is gone (not a fixed sleep).
fn kill9_and_wait(pid: i64) {
    kvmpod_tests::send_signal(pid as i32, Signal::SIGKILL);
    let until = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists()
        && !fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
    {
        assert!(Instant::now() < until, "pid {pid} did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Nomad's RecoverTask: when the monitor is killed, a new one adopts the
/// pod, and its logs resume where they stopped: what the app wrote while
/// no monitor ran is neither lost nor repeated. When every host process of
/// the pod goes at once, the pod is reported exited with the reason, and
/// gc leaves nothing behind.
#[test]
fn a_killed_monitor_is_recovered_or_its_pod_marked_exited() {
    let fx = Fixture::new();
    let gate = fx.host_dir("gate", &[]);
    let manifest = fx
        .one_app(
            "writer",
            "echo before; while [ ! -e /gate/one ]; do sleep 0.1; done; echo during; touch /gate/said-during; \
             while [ ! -e /gate/two ]; do sleep 0.1; done; echo after; exec sleep 600",
        )
        .host_volume("gate", &gate)
        .mount("gate", "/gate")
        .write("pod.json");
    let id = fx.detach(&manifest, &[]);
    fx.wait_for_log(&id, "writer", "before");

    let first = fx.record(&id)["monitor"]["pid"].as_i64().unwrap();
    kill9_and_wait(first);
    // Written while the pod has no monitor: only the agent holds it.
    fs::write(gate.join("one"), "").unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while !gate.join("said-during").exists() {
        assert!(
            Instant::now() < until,
            "the app did not print its second line"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = fx.host_ctl(&["status", &id, "--format", "json"], CMD);
    assert_eq!(st.code, Some(0), "{}", st.dump());
    let st: Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(st["live"]["apps"][0]["state"], "running", "{st}");
    let second = fx.record(&id)["monitor"]["pid"].as_i64().unwrap();
    assert_ne!(first, second, "no new monitor adopted the pod");
    fs::write(gate.join("two"), "").unwrap();
    let logs = fx.wait_for_log(&id, "writer", "after");
    assert_eq!(logs, "before\nduring\nafter\n");

    // Now every host process of the pod at once: its keeper (stopped first,
    // so it cannot start another monitor), its monitor and its VM. The
    // next command finds them gone and says so.
    let rec = fx.record(&id);
    let vm = rec["vm"]["pid"].as_i64().unwrap();
    let keeper = rec["keeper"]["pid"].as_i64().expect("a keeper");
    kvmpod_tests::send_signal(keeper as i32, Signal::SIGSTOP);
    kill9_and_wait(second);
    kill9_and_wait(vm);
    kill9_and_wait(keeper);
    let list = fx.host_ctl(&["list"], CMD);
    assert!(
        kvmpod_tests::list_cell(&list.stdout, &id, "STATE").as_deref() == Some("exited"),
        "{}",
        list.dump()
    );
    let reason = fx.record(&id)["exitReason"].as_str().unwrap().to_string();
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
    fx.finish();
}

/// `rm` refuses a running pod; `rm -f` stops it and removes it, leaving
/// nothing behind.
#[test]
fn rm_force_removes_a_running_pod() {
    let fx = Fixture::new();
    let manifest = fx
        .one_app("sleeper", "echo ready; exec sleep 600")
        .write("pod.json");
    let id = fx.detach(&manifest, &[]);
    let refused = fx.host_ctl(&["rm", &id], CMD);
    assert_ne!(refused.code, Some(0), "{}", refused.dump());
    assert!(
        refused
            .stderr
            .contains("is running; stop it first, or use --force"),
        "{}",
        refused.dump()
    );
    let rm = fx.host_ctl(&["rm", "-f", &id], Duration::from_secs(120));
    assert_eq!(rm.code, Some(0), "{}", rm.dump());
    assert_eq!(rm.stdout.trim(), id);
    assert_eq!(fx.pods_created(), 0);
    fx.finish();
}
