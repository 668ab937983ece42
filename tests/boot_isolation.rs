//! Boot tests of app isolation and of every per-app setting: each app in
//! its own mount namespace, pivoted into its root, with its user, groups,
//! environment, working directory, capabilities, limits and restart
//! policy; mount targets that symlinks cannot redirect.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::time::Duration;

use kvmpod_tests::{assert_checks, check, equals, erofs, Fixture, CMD, POD_LIMIT};
use serde_json::json;

/// What the own-root app checks: its root, mounts, hostname, /etc, /dev,
/// a read-only /sys.
fn own_root_checks() -> String {
    [
        check("no-agent", "[ ! -e /init ]"),
        check(
            "no-other-apps",
            "[ ! -e /opt/stage2 ] && [ ! -e /mnt/data ]",
        ),
        check(
            "volume-in-mountinfo",
            "grep -q ' /data rw' /proc/self/mountinfo",
        ),
        check(
            "root-is-pivoted",
            "[ \"$(awk '$5 == \"/\" {print $5}' /proc/self/mountinfo | wc -l)\" = 1 ]",
        ),
        equals("hostname", "hostname", "isolated-pod"),
        equals("etc-hostname", "cat /etc/hostname", "isolated-pod"),
        check(
            "etc-hosts",
            // The hostname names the pod's address on its (default,
            // user-mode) network.
            "grep -qE '^10\\.0\\.2\\.15[[:space:]]+isolated-pod' /etc/hosts",
        ),
        check("resolv-conf", "[ -f /etc/resolv.conf ]"),
        equals(
            "minimal-dev",
            "ls /dev | tr '\\n' ' '",
            "console fd full null ptmx pts random shm stderr stdin stdout tty urandom zero ",
        ),
        check(
            "sys-mounted-ro",
            "awk '$5 == \"/sys\" {print $6}' /proc/self/mountinfo | grep -qE '^ro(,|$)'",
        ),
        erofs(
            "sys-attribute-erofs",
            "/sys/kernel/mm/transparent_hugepage/enabled",
        ),
        equals("own-ptys", "ls /dev/pts", "ptmx"),
    ]
    .concat()
}

#[test]
fn apps_see_only_their_own_root_and_run_as_configured() {
    let fx = Fixture::new();
    let data = fx.host_dir("data", &[]);
    let nobody = [
        "echo uid=$(id -u) gid=$(id -g); grep CapEff /proc/self/status; ".to_string(),
        equals(
            "dev-modes",
            "stat -c '%a %n' /dev/null /dev/zero /dev/urandom /dev/tty | tr '\\n' ' '",
            "666 /dev/null 666 /dev/zero 666 /dev/urandom 666 /dev/tty ",
        ),
        check(
            "dev-null-writable",
            "echo x > /dev/null && head -c 4 /dev/urandom > /dev/null",
        ),
    ]
    .concat();
    let capped = [
        "grep -E 'CapEff|NoNewPrivs' /proc/self/status; ".to_string(),
        equals("oom-score-adj", "cat /proc/self/oom_score_adj", "500"),
    ]
    .concat();
    let read_only = [
        erofs("root-refuses-writes", "/new-file"),
        check("tmpfs-writable", "touch /scratch/file"),
        check("volume-writable", "touch /data/from-rofs"),
    ]
    .concat();
    let m = fx
        .pod()
        .pod_field("hostname", json!("isolated-pod"))
        .host_volume("data", &data)
        .app("own-root", &own_root_checks())
        .mount("data", "/data")
        .app("nobody", &nobody)
        .set("user", json!("nobody"))
        .app("capped", &capped)
        .set("capabilities", json!({"drop": ["NET_RAW"]}))
        .set("oomScoreAdj", json!(500))
        .app("rofs", &read_only)
        .set("readOnlyRootFilesystem", json!(true))
        .set("tmpfs", json!([{"path": "/scratch", "size": "1M"}]))
        .mount("data", "/data")
        .write("pod.json");
    let out = fx.run(&[m.to_str().unwrap()], POD_LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_checks(
        &out.stdout,
        &out.dump(),
        &[
            "no-agent",
            "no-other-apps",
            "volume-in-mountinfo",
            "root-is-pivoted",
            "hostname",
            "etc-hostname",
            "etc-hosts",
            "resolv-conf",
            "minimal-dev",
            "sys-mounted-ro",
            "sys-attribute-erofs",
            "own-ptys",
            "dev-modes",
            "dev-null-writable",
            "oom-score-adj",
            "root-refuses-writes",
            "tmpfs-writable",
            "volume-writable",
        ],
    );
    assert_identity_and_caps(&out.stdout, &out.dump());
    assert!(data.join("from-rofs").exists());
    fx.finish();
}

/// nobody's ids and empty capability set; the capped app's default set
/// without NET_RAW.
fn assert_identity_and_caps(stdout: &str, dump: &str) {
    assert!(stdout.contains("nobody   | uid=65534 gid=65534"), "{dump}");
    assert!(
        stdout.contains("nobody   | CapEff:\t0000000000000000"),
        "{dump}"
    );
    let cap_eff = stdout
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
    assert!(stdout.contains("capped   | NoNewPrivs:\t0"), "{dump}");
}

/// Every `rlimits` type, with distinct soft and hard limits, as
/// `/proc/self/limits` shows them (name, soft, hard).
const RLIMITS: [(&str, &str, u64, u64); 16] = [
    ("cpu", "Max cpu time", 1000, 2000),
    ("fsize", "Max file size", 1_000_000_000, 2_000_000_000),
    ("data", "Max data size", 4_000_000_000, 5_000_000_000),
    ("stack", "Max stack size", 8_388_608, 16_777_216),
    ("core", "Max core file size", 0, 1000),
    ("rss", "Max resident set", 1_000_000, 2_000_000),
    ("nproc", "Max processes", 500, 600),
    ("nofile", "Max open files", 100, 200),
    ("memlock", "Max locked memory", 65_536, 131_072),
    ("as", "Max address space", 8_000_000_000, 9_000_000_000),
    ("locks", "Max file locks", 100, 200),
    ("sigpending", "Max pending signals", 1000, 2000),
    ("msgqueue", "Max msgqueue size", 819_200, 1_638_400),
    ("nice", "Max nice priority", 0, 10),
    ("rtprio", "Max realtime priority", 0, 5),
    ("rttime", "Max realtime timeout", 1_000_000, 2_000_000),
];

/// The environment (defaults and overrides), working directory, group and
/// supplementary groups, every rlimit, tmpfs size and mode, cgroup limits
/// (cpu.weight, pids.max) and a fork bomb held by `pidsLimit`.
/// The pod of `every_app_setting_reaches_the_process`: one app per
/// setting, each printing its checks.
fn settings_pod(fx: &Fixture) -> std::path::PathBuf {
    let rlimit_checks: String = RLIMITS
        .iter()
        .map(|(kind, label, soft, hard)| {
            check(
                &format!("rlimit-{kind}"),
                &format!("grep -qE '^{label} +{soft} +{hard} ' /proc/self/limits"),
            )
        })
        .collect();
    let rlimits: Vec<_> = RLIMITS
        .iter()
        .map(|(kind, _, soft, hard)| json!({"type": kind, "soft": soft, "hard": hard}))
        .collect();
    fx.pod()
        .app("env-set", &[
            equals("greeting", "echo $GREETING", "hi there"),
            equals("path-override", "echo $PATH", "/bin:/custom"),
            equals("home-override", "echo $HOME", "/home/elsewhere"),
            equals("app-name", "echo $AC_APP_NAME", "env-set"),
            equals("workdir", "pwd", "/srv/work"),
        ].concat())
        .set("env", json!([{"name": "GREETING", "value": "hi there"}, {"name": "PATH", "value": "/bin:/custom"}, {"name": "HOME", "value": "/home/elsewhere"}]))
        .set("workingDirectory", json!("/srv/work"))
        .app("env-default", &[
            equals("default-path", "echo $PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            equals("default-home", "echo $HOME", "/root"),
            equals("default-workdir", "pwd", "/"),
        ].concat())
        .app("grouped", &[
            equals("group", "id -g", "29"),
            equals("user-groups", "id -G", "29 50"),
        ].concat())
        .set("user", json!("nobody"))
        .set("group", json!("audio"))
        .app("member", &equals("supplementary", "id -G", "65534 50"))
        .set("user", json!("nobody"))
        .app("limited", &rlimit_checks)
        .set("rlimits", json!(rlimits))
        .app("tmp", &[
            equals("tmpfs-mode", "stat -c %a /scratch", "700"),
            equals("tmpfs-size", "df -k /scratch | awk 'NR==2 {print $2}'", "2048"),
        ].concat())
        .set("tmpfs", json!([{"path": "/scratch", "size": "2M", "mode": "0700"}]))
        // Forks until it cannot: the shell dies of "can't fork" (status 2)
        // with no more than pids.max processes.
        .app("bomb", "i=0; while :; do sleep 5 & i=$((i+1)); echo forked $i; done")
        .set("resources", json!({"pidsLimit": 10}))
        // Reads its own cgroup's files through PID 1's root (the guest's).
        .app("observer", &[
            equals("cpu-weight", "cat /proc/1/root/sys/fs/cgroup/app-observer/cpu.weight", "500"),
            equals("pids-max", "cat /proc/1/root/sys/fs/cgroup/app-observer/pids.max", "30"),
        ].concat())
        .set("resources", json!({"pidsLimit": 30, "cpuWeight": 500}))
        .set("capabilities", json!({"add": ["SYS_PTRACE"]}))
        .write("pod.json")
}

#[test]
fn every_app_setting_reaches_the_process() {
    let fx = Fixture::new();
    let root = fx.root();
    fs::create_dir_all(root.join("srv/work")).unwrap();
    fs::write(
        root.join("etc/group"),
        "root:x:0:\nstaff:x:50:nobody\naudio:x:29:\nnogroup:x:65534:\n",
    )
    .unwrap();
    let m = settings_pod(&fx);
    let out = fx.run(&[m.to_str().unwrap()], POD_LIMIT);
    assert_eq!(out.code, Some(2), "{}", out.dump());
    assert_fork_bomb_held(&out);
    let mut names = vec![
        "greeting",
        "path-override",
        "home-override",
        "app-name",
        "workdir",
        "default-path",
        "default-home",
        "default-workdir",
        "group",
        "user-groups",
        "supplementary",
        "tmpfs-mode",
        "tmpfs-size",
        "cpu-weight",
        "pids-max",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    names.extend(RLIMITS.iter().map(|(k, ..)| format!("rlimit-{k}")));
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_checks(&out.stdout, &out.dump(), &names);
    fx.finish();
}

/// The bomb forked no more than its pids.max allows (its shell counts as
/// one), then died of a failed fork.
fn assert_fork_bomb_held(out: &kvmpod_tests::Outcome) {
    let forks = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("bomb        | forked "))
        .filter_map(|n| n.trim().parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    assert!((1..10).contains(&forks), "{forks} forks\n{}", out.dump());
    assert!(
        out.stderr.contains("app \"bomb\" exited with status 2"),
        "{}",
        out.dump()
    );
    assert!(
        out.stderr.contains("can't fork"),
        "no fork failure reported\n{}",
        out.dump()
    );
}

/// `noNewPrivileges` with a real setuid-root binary: without it the binary
/// runs with euid 0 (the control), with it the kernel does not raise the
/// caller's privileges.
#[test]
fn no_new_privileges_stops_a_setuid_binary() {
    let fx = Fixture::new();
    let root = fx.root();
    let probe = root.join("bin/euid-probe");
    fs::write(&probe, kvmpod_tests::euid_probe()).unwrap();
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o4755)).unwrap();
    let script = "/bin/euid-probe; echo euid-low-byte=$?; grep NoNewPrivs /proc/self/status";
    let m = fx
        .pod()
        .app("control", script)
        .set("user", json!("nobody"))
        .app("nnp", script)
        .set("user", json!("nobody"))
        .set("noNewPrivileges", json!(true))
        .write("pod.json");
    let out = fx.run(&[m.to_str().unwrap()], POD_LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    for line in [
        "control | euid-low-byte=0",
        "control | NoNewPrivs:\t0",
        "nnp     | euid-low-byte=254",
        "nnp     | NoNewPrivs:\t1",
    ] {
        assert!(out.stdout.contains(line), "no {line:?}\n{}", out.dump());
    }
    fx.finish();
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
    let m = fx
        .pod()
        .app("flaky", "echo flaky run; exit 1")
        .set("restartPolicy", json!("on-failure"))
        .set("maxRestarts", json!(3))
        .app("clean", "echo clean run; exit 0")
        .set("restartPolicy", json!("always"))
        .set("maxRestarts", json!(2))
        .app("once", "echo once; exit 2")
        .write("pod.json");
    let id = fx.detach(&m, &[]);
    let record = fx.wait_until_exited(&id, Duration::from_secs(120));
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
    fx.finish();
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
        // PID 1 is the agent: its namespace is the guest's own, and its
        // root holds every app's root.
        check(
            "dangling-target-not-created",
            "[ ! -e /proc/1/root/opt/stage2/trapped/rootfs/nonexistent ] && [ ! -e /proc/1/root/nonexistent ]",
        ),
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
                {"name": "observer", "rootfs": clean, "capabilities": {"add": ["SYS_PTRACE"]},
                 "exec": ["/bin/sh", "-c", format!("sleep 1; {observer}")]}
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
            "dangling-target-not-created",
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
    fx.finish();
}
