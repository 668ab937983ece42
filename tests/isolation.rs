//! Boot tests of app isolation: each app in its own mount namespace,
//! pivoted into its root, with its user, capabilities, limits and restart
//! policy; mount targets that symlinks cannot redirect.

use std::fs;
use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

use kvmpod_tests::{Fixture, POD_LIMIT};
use serde_json::{json, Value};

const CMD: Duration = Duration::from_secs(60);

/// Each check prints `CHECK <name> ok` or `CHECK <name> FAIL ...`.
fn check(name: &str, condition: &str) -> String {
    format!("if {condition}; then echo 'CHECK {name} ok'; else echo 'CHECK {name} FAIL'; fi; ")
}

fn assert_checks(stdout: &str, dump: &str, names: &[&str]) {
    for n in names {
        assert!(
            stdout.contains(&format!("CHECK {n} ok")),
            "missing CHECK {n} ok\n{dump}"
        );
    }
    assert!(!stdout.contains("FAIL"), "{dump}");
}

#[test]
fn apps_see_only_their_own_root_and_run_as_configured() {
    let fx = Fixture::new();
    let root = fx.rootfs("rootfs");
    let data = fx.host_dir("data", &[]);
    let own_root = [
        check("no-agent", "[ ! -e /init ]"),
        check("no-other-apps", "[ ! -e /opt/stage2 ] && [ ! -e /mnt/data ]"),
        check("volume-in-mountinfo", "grep -q ' /data rw' /proc/self/mountinfo"),
        check("root-is-pivoted", "[ \"$(awk '$5 == \"/\" {print $5}' /proc/self/mountinfo | wc -l)\" = 1 ]"),
        check("hostname", "[ \"$(hostname)\" = isolated-pod ] && grep -q isolated-pod /etc/hostname /etc/hosts"),
        check("resolv-conf", "[ -f /etc/resolv.conf ]"),
        check("minimal-dev", "[ \"$(ls /dev | tr '\\n' ' ')\" = 'console fd full null ptmx pts random shm stderr stdin stdout tty urandom zero ' ]"),
        check("sys-read-only", "! touch /sys/kvmpod 2>/dev/null"),
        check("own-ptys", "[ \"$(ls /dev/pts)\" = ptmx ]"),
    ]
    .concat();
    let nobody = [
        "echo uid=$(id -u) gid=$(id -g); grep CapEff /proc/self/status; ".to_string(),
        check("dev-modes", "[ \"$(stat -c '%a %n' /dev/null /dev/zero /dev/urandom /dev/tty | tr '\\n' ' ')\" = '666 /dev/null 666 /dev/zero 666 /dev/urandom 666 /dev/tty ' ]"),
        check("dev-null-writable", "echo x > /dev/null && head -c 4 /dev/urandom > /dev/null"),
    ]
    .concat();
    let capped = [
        "grep -E 'CapEff|NoNewPrivs' /proc/self/status; ".to_string(),
        check("nofile", "[ \"$(ulimit -n)\" = 100 ]"),
        check(
            "oom-score-adj",
            "[ \"$(cat /proc/self/oom_score_adj)\" = 500 ]",
        ),
    ]
    .concat();
    let read_only = [
        check("root-refuses-writes", "! touch /new-file 2>/dev/null"),
        check("tmpfs-writable", "touch /scratch/file"),
        check("volume-writable", "touch /data/from-rofs"),
    ]
    .concat();
    let m = fx.write_manifest(
        "pod.json",
        &json!({
            "hostname": "isolated-pod",
            "volumes": [{"name": "data", "kind": "host", "source": data}],
            "apps": [
                {"name": "own-root", "rootfs": root, "exec": ["/bin/sh", "-c", own_root],
                 "mountPoints": [{"volume": "data", "path": "/data"}]},
                {"name": "nobody", "rootfs": root, "user": "nobody",
                 "exec": ["/bin/sh", "-c", nobody]},
                {"name": "capped", "rootfs": root, "exec": ["/bin/sh", "-c", capped],
                 "capabilities": {"drop": ["NET_RAW"]}, "noNewPrivileges": true,
                 "rlimits": [{"type": "nofile", "soft": 100}], "oomScoreAdj": 500},
                {"name": "rofs", "rootfs": root, "exec": ["/bin/sh", "-c", read_only],
                 "readOnlyRootFilesystem": true, "tmpfs": [{"path": "/scratch", "size": "1M"}],
                 "mountPoints": [{"volume": "data", "path": "/data"}]}
            ]
        }),
    );
    let out = fx.run(&[m.to_str().unwrap()], POD_LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let dump = out.dump();
    assert_checks(
        &out.stdout,
        &dump,
        &[
            "no-agent",
            "no-other-apps",
            "volume-in-mountinfo",
            "root-is-pivoted",
            "hostname",
            "resolv-conf",
            "minimal-dev",
            "sys-read-only",
            "own-ptys",
            "dev-modes",
            "dev-null-writable",
            "nofile",
            "oom-score-adj",
            "root-refuses-writes",
            "tmpfs-writable",
            "volume-writable",
        ],
    );
    assert!(
        out.stdout.contains("nobody   | uid=65534 gid=65534"),
        "{dump}"
    );
    assert!(
        out.stdout.contains("nobody   | CapEff:\t0000000000000000"),
        "{dump}"
    );
    let cap_eff = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("capped   | CapEff:\t"))
        .unwrap_or_else(|| panic!("no CapEff line\n{dump}"));
    let caps = u64::from_str_radix(cap_eff.trim(), 16).unwrap();
    assert_eq!(
        caps & (1 << 13),
        0,
        "NET_RAW was dropped but is effective: {caps:#x}"
    );
    assert_ne!(caps & 1, 0, "CHOWN (default) is missing: {caps:#x}");
    assert_eq!(
        caps & (1 << 21),
        0,
        "SYS_ADMIN is not a default capability: {caps:#x}"
    );
    assert!(out.stdout.contains("capped   | NoNewPrivs:\t1"), "{dump}");
    assert!(data.join("from-rofs").exists());
}

fn times_of(logs: &str, needle: &str) -> Vec<Duration> {
    logs.lines()
        .filter(|l| l.contains(needle))
        .map(|l| {
            let ts = l.split_whitespace().next().unwrap();
            humantime_parse(ts)
        })
        .collect()
}

/// Parses the RFC 3339 times host-ctl writes (UTC, nanoseconds).
fn humantime_parse(ts: &str) -> Duration {
    let (date, time) = ts.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<u64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<u64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    let nanos: u64 = format!("{frac:0<9}")[..9].parse().unwrap();
    // Days are enough to order times within one test run.
    let days = d[0] * 372 + d[1] * 31 + d[2];
    Duration::from_secs(days * 86400 + t[0] * 3600 + t[1] * 60 + t[2]) + Duration::from_nanos(nanos)
}

#[test]
fn restart_policies_restart_with_growing_delays() {
    let fx = Fixture::new();
    let root = fx.rootfs("rootfs");
    let m = fx.write_manifest(
        "pod.json",
        &json!({"apps": [
            {"name": "flaky", "rootfs": root, "exec": ["/bin/sh", "-c", "echo flaky run; exit 1"],
             "restartPolicy": "on-failure", "maxRestarts": 3},
            {"name": "clean", "rootfs": root, "exec": ["/bin/sh", "-c", "echo clean run; exit 0"],
             "restartPolicy": "always", "maxRestarts": 2},
            {"name": "once", "rootfs": root, "exec": ["/bin/sh", "-c", "echo once; exit 2"]}
        ]}),
    );
    let out = fx.run(&["--detach", m.to_str().unwrap()], POD_LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let id = out.stdout.trim().to_string();
    let until = Instant::now() + Duration::from_secs(120);
    let record = loop {
        let rec: Value = serde_json::from_slice(
            &fs::read(fx.state_dir().join("pods").join(&id).join("state.json")).unwrap(),
        )
        .unwrap();
        if rec["state"] == "exited" {
            break rec;
        }
        assert!(Instant::now() < until, "the pod did not end: {rec}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let app = |n: &str| {
        record["apps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(app("flaky")["restarts"], 3, "{record}");
    assert_eq!(app("flaky")["exitCode"], 1);
    assert_eq!(app("clean")["restarts"], 2, "{record}");
    assert_eq!(app("clean")["exitCode"], 0);
    assert!(app("once").get("restarts").is_none(), "{record}");
    assert_eq!(app("once")["exitCode"], 2);

    let logs = fx.host_ctl(&["logs", "--timestamps", &id], CMD);
    let runs = times_of(&logs.stdout, "flaky run");
    assert_eq!(runs.len(), 4, "{}", logs.dump());
    let gaps: Vec<Duration> = runs.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("flaky restarted after gaps of {gaps:?}");
    assert!(gaps[0] >= Duration::from_millis(250), "{gaps:?}");
    assert!(
        gaps[1] > gaps[0] && gaps[2] > gaps[1],
        "delays do not grow: {gaps:?}"
    );
    assert_eq!(
        times_of(&logs.stdout, "clean run").len(),
        3,
        "{}",
        logs.dump()
    );
    assert_eq!(times_of(&logs.stdout, "once").len(), 1);
}

/// A hostile image's symlinks cannot place a mount outside its root:
/// absolute and relative escapes resolve inside it, a link to nothing is
/// refused, and the guest's own /etc has no mount on it.
#[test]
fn hostile_symlinks_never_mount_outside_the_app_root() {
    let fx = Fixture::new();
    let root = fx.rootfs("hostile");
    symlink("/etc", root.join("data")).unwrap();
    symlink("../../../../../../..", root.join("up")).unwrap();
    fs::create_dir_all(root.join("mnt")).unwrap();
    symlink("/nonexistent/deep", root.join("dangling")).unwrap();
    let clean = fx.rootfs("clean");
    let vol = fx.host_dir("vol", &[("marker", "from the volume\n")]);
    let hostile = [
        check(
            "absolute-link-inside",
            "[ \"$(cat /etc/marker)\" = 'from the volume' ]",
        ),
        check(
            "relative-link-inside",
            "[ \"$(cat /escape/marker)\" = 'from the volume' ]",
        ),
        check("own-etc-mounted", "grep -q ' /etc rw' /proc/self/mountinfo"),
    ]
    .concat();
    let observer = [
        // PID 1 is the agent: its namespace is the guest's own.
        check(
            "guest-etc-untouched",
            "! awk '{print $5}' /proc/1/mountinfo | grep -qE '^/etc(/|$)'",
        ),
        check(
            "guest-mnt-untouched",
            "! awk '{print $5}' /proc/1/mountinfo | grep -qE '^/(escape|mnt/escape)'",
        ),
    ]
    .concat();
    let m = fx.write_manifest(
        "pod.json",
        &json!({
            "volumes": [{"name": "vol", "kind": "host", "source": vol}],
            "apps": [
                {"name": "hostile", "rootfs": root, "exec": ["/bin/sh", "-c", hostile],
                 "mountPoints": [{"volume": "vol", "path": "/data"}, {"volume": "vol", "path": "/up/escape"}]},
                {"name": "trapped", "rootfs": root, "exec": ["/bin/true"],
                 "mountPoints": [{"volume": "vol", "path": "/dangling/x"}]},
                {"name": "observer", "rootfs": clean, "exec": ["/bin/sh", "-c", format!("sleep 1; {observer}")]}
            ]
        }),
    );
    let out = fx.run(&[m.to_str().unwrap()], POD_LIMIT);
    let dump = out.dump();
    assert_checks(
        &out.stdout,
        &dump,
        &[
            "absolute-link-inside",
            "relative-link-inside",
            "own-etc-mounted",
            "guest-etc-untouched",
            "guest-mnt-untouched",
        ],
    );
    assert_eq!(out.code, Some(125), "{dump}");
    assert!(
        out.stderr
            .contains("app \"trapped\" could not start (status 125)")
            && out
                .stderr
                .contains("/dangling is a symlink to nothing inside the app's root"),
        "{dump}"
    );
    assert!(!root.join("nonexistent").exists());
}
