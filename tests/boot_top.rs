//! Boot test of `host-ctl top`: a detached pod's processes, by app, found
//! through the apps' cgroups in the guest, in a table, as JSON and through
//! a template, with a command exec'd in an app among them.

use std::time::{Duration, Instant};

use kvmpod_tests::{Fixture, CMD};
use serde_json::{json, Value};

const HEADER: [&str; 9] = [
    "APP", "PID", "PPID", "USER", "STATE", "ELAPSED", "TIME", "RSS", "COMMAND",
];

/// The rows of `top`'s table, checked against its header: eight cells
/// without spaces, then the command, which may hold some.
fn table(stdout: &str) -> Vec<Vec<String>> {
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, HEADER, "{stdout}");
    lines
        .map(|line| {
            let mut cells: Vec<String> = Vec::new();
            let mut rest = line;
            for _ in 0..HEADER.len() - 1 {
                rest = rest.trim_start();
                let end = rest.find(' ').unwrap_or(rest.len());
                cells.push(rest[..end].to_string());
                rest = &rest[end..];
            }
            cells.push(rest.trim().to_string());
            assert!(
                cells.iter().all(|c| !c.is_empty()),
                "a short row {line:?}\n{stdout}"
            );
            cells
        })
        .collect()
}

fn column(name: &str) -> usize {
    HEADER.iter().position(|h| *h == name).unwrap()
}

/// The rows whose COMMAND is `command`.
fn running<'a>(rows: &'a [Vec<String>], command: &str) -> Vec<&'a Vec<String>> {
    rows.iter()
        .filter(|r| r[column("COMMAND")] == command)
        .collect()
}

const LOOP: &str = "while true; do sleep 0.3; done";

/// `top` lists each app's processes (and only the named app's), with
/// their PIDs, parents, users, commands and figures, the same in JSON; an
/// exec'd command shows under its app; an unknown app is an error naming
/// the pod's apps, and a pod that stopped has no processes to list.
#[test]
fn top_lists_the_processes_of_a_pods_apps() {
    let fx = Fixture::new();
    let manifest = fx
        .pod()
        .app_exec("sleeper", json!(["sleep", "1000"]))
        .app("looper", LOOP)
        .set("user", json!("nobody"))
        .write("pod.json");
    let id = fx.detach(&manifest, &[]);
    let pids = Pids::of(&fx, &id);

    every_app(&fx, &id, &pids);
    one_app(&fx, &id, &pids);
    as_json(&fx, &id, &pids);
    unknown_app(&fx, &id);
    let exec = exec_in_an_app(&fx, &id);

    let stop = fx.host_ctl(&["stop", "--timeout", "2", &id], Duration::from_secs(120));
    assert_eq!(stop.code, Some(0), "{}", stop.dump());
    exec.signal(nix::sys::signal::Signal::SIGTERM);
    exec.finish(CMD);

    let stopped = fx.host_ctl(&["top", &id], CMD);
    assert_ne!(stopped.code, Some(0), "{}", stopped.dump());
    assert!(
        stopped.stderr.contains(&format!("pod {id} is not running")),
        "{}",
        stopped.dump()
    );
    assert_eq!(fx.host_ctl(&["rm", &id], CMD).code, Some(0));
    fx.finish();
}

/// The apps' own PIDs, from `status`.
struct Pids(Value);

impl Pids {
    fn of(fx: &Fixture, id: &str) -> Pids {
        let status = fx.host_ctl(&["status", id, "--format", "json"], CMD);
        Pids(serde_json::from_str(&status.stdout).expect("status --format json"))
    }

    fn of_app(&self, app: &str) -> String {
        self.0["live"]["apps"]
            .as_array()
            .and_then(|apps| apps.iter().find(|a| a["name"] == app))
            .and_then(|a| a["pid"].as_i64())
            .unwrap_or_else(|| panic!("no pid for {app}: {}", self.0))
            .to_string()
    }
}

/// Every app's processes, and nothing else.
fn every_app(fx: &Fixture, id: &str, pids: &Pids) {
    let pid_of = |app: &str| pids.of_app(app);
    let top = fx.host_ctl(&["top", id], CMD);
    assert_eq!(top.code, Some(0), "{}", top.dump());
    let rows = table(&top.stdout);
    let sleeper = running(&rows, "sleep 1000");
    assert_eq!(sleeper.len(), 1, "{}", top.stdout);
    let sleeper = sleeper[0];
    assert_eq!(sleeper[column("APP")], "sleeper", "{}", top.stdout);
    assert_eq!(sleeper[column("PID")], pid_of("sleeper"), "{}", top.stdout);
    // Apps are the agent's children.
    assert_eq!(sleeper[column("PPID")], "1", "{}", top.stdout);
    assert_eq!(sleeper[column("USER")], "0", "{}", top.stdout);
    assert_eq!(sleeper[column("STATE")], "S", "{}", top.stdout);
    assert!(sleeper[column("RSS")].ends_with("iB"), "{}", top.stdout);
    // The shell may have forked a copy of itself (about to run `sleep`):
    // the app's own is the one with its PID.
    let shell_command = format!("/bin/sh -c {LOOP}");
    let shell = running(&rows, &shell_command)
        .into_iter()
        .find(|r| r[column("PID")] == pid_of("looper"))
        .unwrap_or_else(|| panic!("no shell\n{}", top.stdout));
    assert_eq!(shell[column("APP")], "looper", "{}", top.stdout);
    assert_eq!(shell[column("PPID")], "1", "{}", top.stdout);
    assert_eq!(shell[column("USER")], "65534", "{}", top.stdout);
    // Nothing but the two apps' processes: the sleeper, the shell and,
    // at times, the shell's child (`sleep 0.3`, the fork before it or the
    // zombie after it).
    for row in &rows {
        match row[column("APP")].as_str() {
            "sleeper" => assert_eq!(row, sleeper, "{}", top.stdout),
            "looper" if row == shell => {}
            "looper" => {
                let command = &row[column("COMMAND")];
                assert!(
                    ["sleep 0.3", "[sleep]", &shell_command].contains(&command.as_str()),
                    "{}",
                    top.stdout
                );
                assert_eq!(row[column("PPID")], pid_of("looper"), "{}", top.stdout);
                assert_eq!(row[column("USER")], "65534", "{}", top.stdout);
            }
            other => panic!("a process of app {other:?}\n{}", top.stdout),
        }
    }
}

/// One app's processes only.
fn one_app(fx: &Fixture, id: &str, pids: &Pids) {
    let pid_of = |app: &str| pids.of_app(app);
    let one = fx.host_ctl(&["top", id, "sleeper"], CMD);
    assert_eq!(one.code, Some(0), "{}", one.dump());
    let one_rows = table(&one.stdout);
    assert_eq!(one_rows.len(), 1, "{}", one.stdout);
    assert_eq!(
        one_rows[0][column("COMMAND")],
        "sleep 1000",
        "{}",
        one.stdout
    );
    assert_eq!(
        one_rows[0][column("PID")],
        pid_of("sleeper"),
        "{}",
        one.stdout
    );
}

/// JSON: a field per column, the same processes; a template of it.
fn as_json(fx: &Fixture, id: &str, pids: &Pids) {
    let pid_of = |app: &str| pids.of_app(app);
    let json_out = fx.host_ctl(&["top", id, "--format", "json"], CMD);
    assert_eq!(json_out.code, Some(0), "{}", json_out.dump());
    let procs: Value = serde_json::from_str(&json_out.stdout).expect("top --format json");
    let procs = procs.as_array().expect("a list of processes");
    let mut columns: Vec<String> = HEADER.iter().map(|h| h.to_lowercase()).collect();
    columns.sort();
    for p in procs {
        let mut fields: Vec<String> = p.as_object().unwrap().keys().cloned().collect();
        fields.sort();
        assert_eq!(fields, columns, "{p}");
    }
    let sleep = procs
        .iter()
        .find(|p| p["command"] == "sleep 1000")
        .unwrap_or_else(|| panic!("no sleep 1000\n{}", json_out.stdout));
    assert_eq!(sleep["app"], "sleeper");
    assert_eq!(sleep["pid"].to_string(), pid_of("sleeper"));
    assert_eq!(sleep["ppid"], 1);
    assert_eq!(sleep["user"], 0);
    assert_eq!(sleep["state"], "S");
    assert!(sleep["rss"].as_u64().is_some_and(|kib| kib > 0), "{sleep}");
    // It has run since the pod started: not none, not days.
    let elapsed = sleep["elapsed"].as_u64().unwrap_or(0);
    assert!((1..86_400_000).contains(&elapsed), "{sleep}");
    assert!(sleep["time"].as_u64().is_some(), "{sleep}");
    // The RSS is the kernel's, as the app sees it (an idle sleep's stays
    // put; its root's pages may be DAX mappings, which do not count).
    let status = fx.host_ctl(
        &[
            "exec",
            id,
            "sleeper",
            "--",
            "cat",
            &format!("/proc/{}/status", pid_of("sleeper")),
        ],
        CMD,
    );
    let vm_rss = status
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.split_whitespace().next())
        .unwrap_or_else(|| panic!("no VmRSS\n{}", status.dump()));
    assert_eq!(sleep["rss"].to_string(), vm_rss, "{}", status.dump());
    assert!(
        procs
            .iter()
            .any(|p| p["app"] == "looper" && p["user"] == 65534),
        "{}",
        json_out.stdout
    );

    // A template, a line per process.
    let line = fx.host_ctl(
        &["top", id, "sleeper", "--format", "{{.App}}:{{.Command}}"],
        CMD,
    );
    assert_eq!(line.stdout, "sleeper:sleep 1000\n", "{}", line.dump());
}

/// An app the pod does not have: an error naming the apps it has.
fn unknown_app(fx: &Fixture, id: &str) {
    let unknown = fx.host_ctl(&["top", id, "nope"], CMD);
    assert_ne!(unknown.code, Some(0), "{}", unknown.dump());
    for word in ["\"nope\"", "sleeper", "looper"] {
        assert!(unknown.stderr.contains(word), "{}", unknown.dump());
    }
}

/// A command exec'd in an app is the app's process: starts `sleep 77` in
/// the looper and finds it in `top`; returns the exec session, left
/// running.
fn exec_in_an_app(fx: &Fixture, id: &str) -> kvmpod_tests::Running {
    let exec = fx.spawn_host_ctl(&["exec", id, "looper", "--", "sleep", "77"]);
    let until = Instant::now() + Duration::from_secs(30);
    let exec_row = loop {
        let top = fx.host_ctl(&["top", id, "looper"], CMD);
        assert_eq!(top.code, Some(0), "{}", top.dump());
        let rows = table(&top.stdout);
        if let Some(row) = running(&rows, "sleep 77").first() {
            break (*row).clone();
        }
        assert!(Instant::now() < until, "no sleep 77\n{}", top.dump());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(exec_row[column("APP")], "looper");
    // The app's user, as exec uses by default.
    assert_eq!(exec_row[column("USER")], "65534");
    let sleeper_only = fx.host_ctl(&["top", id, "sleeper"], CMD);
    assert!(
        !sleeper_only.stdout.contains("sleep 77"),
        "{}",
        sleeper_only.dump()
    );
    exec
}
