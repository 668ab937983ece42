//! Boot tests of app output: every byte an app writes reaches `host-ctl
//! logs`, in order, whatever happens to the host-side processes; the
//! non-blocking mode drops and says how much; rotation keeps the files
//! bounded and the retained tail whole.

use std::time::{Duration, Instant};

use kvmpod_tests::{send_signal, Fixture, CMD, POD_LIMIT};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// `seq 1 N` prints exactly 64 MiB for this N (1..999999 take 6,888,888
/// bytes; each later number 8).
const SEQ_64_MIB: u64 = 8_527_496;

/// What `seq 1 n` prints.
fn seq(n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(70 << 20);
    for i in 1..=n {
        out.extend_from_slice(i.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// FNV-1a, to name a mismatch without printing 64 MiB.
fn digest(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{h:016x} ({} bytes)", bytes.len())
}

/// Where two outputs first differ, for the failure message.
fn first_difference(got: &[u8], want: &[u8]) -> String {
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let around = |b: &[u8]| {
        String::from_utf8_lossy(&b[at.saturating_sub(20)..(at + 20).min(b.len())]).into_owned()
    };
    format!(
        "got {}, want {}; first difference at byte {at}: got {:?}, want {:?}",
        digest(got),
        digest(want),
        around(got),
        around(want)
    )
}

fn monitor_pid(fx: &Fixture, id: &str) -> Option<i64> {
    fx.record(id)["monitor"]["pid"].as_i64()
}

fn keeper_pid(fx: &Fixture, id: &str) -> Option<i64> {
    fx.record(id)["keeper"]["pid"].as_i64()
}

fn wait_for_new_keeper(fx: &Fixture, id: &str, old: i64) {
    let until = Instant::now() + Duration::from_secs(10);
    while keeper_pid(fx, id).is_none_or(|p| p == old) {
        assert!(Instant::now() < until, "no new keeper for pod {id}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until pod `id` has a monitor other than `old`, by itself (no
/// host-ctl command runs meanwhile).
fn wait_for_new_monitor(fx: &Fixture, id: &str, old: i64) -> i64 {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) = monitor_pid(fx, id).filter(|&p| p != old) {
            return pid;
        }
        assert!(
            Instant::now() < until,
            "no new monitor adopted pod {id} within 10 s of its monitor's death"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An app writes 64 MiB of known content as fast as it can while the test
/// SIGKILLs the pod's monitor twice and its keeper once: a new one takes
/// over each time without any command, and `logs` returns every byte in
/// order.
#[test]
fn sixty_four_mib_survive_two_monitor_kills() {
    let fx = Fixture::new();
    let m = fx
        .one_app("writer", &format!("seq 1 {SEQ_64_MIB}"))
        .write("pod.json");
    let id = fx.detach(&m, &[]);
    let mut monitor = monitor_pid(&fx, &id).expect("a monitor");
    std::thread::sleep(Duration::from_secs(2));
    send_signal(monitor as i32, Signal::SIGKILL);
    monitor = wait_for_new_monitor(&fx, &id, monitor);
    // The keeper too: the monitor starts another, which keeps it.
    let keeper = keeper_pid(&fx, &id).expect("a keeper");
    send_signal(keeper as i32, Signal::SIGKILL);
    wait_for_new_keeper(&fx, &id, keeper);
    std::thread::sleep(Duration::from_secs(1));
    send_signal(monitor as i32, Signal::SIGKILL);
    wait_for_new_monitor(&fx, &id, monitor);
    fx.wait_until_exited(&id, POD_LIMIT);
    let logs = fx
        .command(&["logs", &id, "writer"])
        .output()
        .expect("host-ctl logs");
    assert!(
        logs.status.success(),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    let want = seq(SEQ_64_MIB);
    assert!(
        logs.stdout == want,
        "{}",
        first_difference(&logs.stdout, &want)
    );
    fx.finish();
}

/// The same output in an attached run: the terminal and the log both get
/// every byte.
#[test]
fn an_attached_run_loses_nothing() {
    let fx = Fixture::new();
    let m = fx
        .one_app("writer", &format!("seq 1 {SEQ_64_MIB}"))
        .write("pod.json");
    let out = fx
        .command(&["run", m.to_str().unwrap()])
        .output()
        .expect("host-ctl run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One app: printed raw, byte for byte.
    let printed: Vec<u8> = out.stdout;
    let want = seq(SEQ_64_MIB);
    assert!(
        printed == want,
        "terminal: {}",
        first_difference(&printed, &want)
    );
    let id = kvmpod_tests::fixture_pods(&fx).pop().expect("a pod");
    let logs = fx
        .command(&["logs", &id, "writer"])
        .output()
        .expect("host-ctl logs");
    assert!(
        logs.stdout == want,
        "logs: {}",
        first_difference(&logs.stdout, &want)
    );
    fx.finish();
}

/// `"logMode": "non-blocking"`: while nobody reads (the monitor stopped),
/// the app is never blocked; what did not fit its buffer is dropped,
/// counted in `status` and `events`, and marked in `logs`; the bytes kept
/// plus the bytes dropped are all the app wrote.
#[test]
fn non_blocking_mode_drops_and_says_how_much() {
    let fx = Fixture::new();
    let gate = fx.host_dir("gate", &[]);
    let m = fx
        .one_app(
            "chatty",
            "while [ ! -e /gate/go ]; do sleep 0.1; done; seq 1 2000000; echo done > /gate/done; exec sleep 600",
        )
        .set("logMode", json!("non-blocking"))
        .set("logBufferSize", json!("64K"))
        .host_volume("gate", &gate)
        .mount("gate", "/gate")
        .write("pod.json");
    let id = fx.detach(&m, &[]);
    // Nobody reads: stop the monitor (a stopped monitor is not replaced).
    let monitor = monitor_pid(&fx, &id).expect("a monitor") as i32;
    send_signal(monitor, Signal::SIGSTOP);
    std::fs::write(gate.join("go"), "").unwrap();
    let until = Instant::now() + Duration::from_secs(120);
    while !gate.join("done").exists() {
        assert!(
            Instant::now() < until,
            "the app was blocked in non-blocking mode"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    send_signal(monitor, Signal::SIGCONT);
    let st = fx.host_ctl(&["status", &id, "--format", "json"], CMD);
    let st: Value = serde_json::from_str(&st.stdout).expect("status --format json");
    let dropped = st["live"]["apps"][0]["droppedBytes"].as_u64().unwrap_or(0);
    assert!(dropped > 0, "nothing was dropped: {st}");
    let events = fx.host_ctl(&["events", "--no-follow", "--format", "json", &id], CMD);
    assert!(
        events.stdout.contains("\"app-output-dropped\""),
        "{}",
        events.dump()
    );
    let stop = fx.host_ctl(&["stop", "--timeout", "1", &id], Duration::from_secs(120));
    assert_eq!(stop.code, Some(0), "{}", stop.dump());
    let rec = fx.record(&id);
    assert_eq!(
        rec["apps"][0]["droppedBytes"].as_u64(),
        Some(dropped),
        "{rec}"
    );
    let logs = fx
        .command(&["logs", &id, "chatty"])
        .output()
        .expect("host-ctl logs");
    let stderr = String::from_utf8_lossy(&logs.stderr);
    assert!(
        stderr.contains("dropped"),
        "no drop marker in logs: {stderr}"
    );
    let want = seq(2_000_000);
    assert_eq!(
        logs.stdout.len() as u64 + dropped,
        want.len() as u64,
        "kept + dropped is not what the app wrote"
    );
    fx.finish();
}

/// Rotation keeps each file near the size asked for and at most the count
/// asked for; `logs` returns the retained tail in order and says the head
/// was rotated away.
#[test]
fn rotation_keeps_files_bounded_and_the_tail_whole() {
    let fx = Fixture::new();
    let m = fx.one_app("writer", "seq 1 1500000").write("pod.json");
    let out = fx.run(
        &[
            "--log-max-size",
            "1M",
            "--log-max-files",
            "3",
            m.to_str().unwrap(),
        ],
        POD_LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let id = kvmpod_tests::fixture_pods(&fx).pop().expect("a pod");
    let dir = fx.state_dir().join("pods").join(&id).join("logs");
    let files: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    assert!(files.len() <= 3, "{files:?}");
    for (name, size) in &files {
        // A record may straddle the limit; a file never holds much more.
        assert!(*size <= 3 << 20, "{name}: {size} bytes");
    }
    let logs = fx
        .command(&["logs", &id, "writer"])
        .output()
        .expect("host-ctl logs");
    let stderr = String::from_utf8_lossy(&logs.stderr);
    assert!(stderr.contains("rotated away"), "{stderr}");
    let text = String::from_utf8_lossy(&logs.stdout);
    let numbers: Vec<u64> = text.lines().filter_map(|l| l.parse().ok()).collect();
    assert_eq!(numbers.last(), Some(&1_500_000), "the tail is missing");
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "the retained tail has a hole"
    );
    assert!(numbers[0] > 1, "nothing was rotated away");
    fx.finish();
}

/// stdout and stderr written alternately keep each stream's order, in the
/// log and apart.
#[test]
fn interleaved_streams_keep_their_order() {
    let fx = Fixture::new();
    let m = fx
        .one_app(
            "both",
            "i=0; while [ $i -lt 3000 ]; do echo out $i; echo err $i >&2; i=$((i+1)); done",
        )
        .write("pod.json");
    let out = fx.run(&[m.to_str().unwrap()], POD_LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let id = kvmpod_tests::fixture_pods(&fx).pop().expect("a pod");
    let logs = fx.host_ctl(&["logs", &id, "both"], CMD);
    let want = |tag: &str| {
        (0..3000)
            .map(|i| format!("{tag} {i}\n"))
            .collect::<String>()
    };
    assert_eq!(logs.stdout, want("out"));
    assert_eq!(logs.stderr, want("err"));
    let rec: Value = fx.record(&id);
    assert_eq!(rec["apps"][0]["exitCode"], 0);
    fx.finish();
}
