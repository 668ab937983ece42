//! host-ctl in a real terminal (tmux), as a user at one sees it: progress
//! while a pod starts, then the app's output in its place; Ctrl-C stops
//! the pod gracefully; the terminal's type and size reach the app, and so
//! does a resize; detach keys leave an app running.

use std::time::Duration;

use kvmpod_tests::tmux::Tmux;
use kvmpod_tests::{Fixture, CMD, POD_LIMIT};

/// `run` on a terminal shows what it waits on (the boot, with the time it
/// has taken) until the app's output comes, which takes its place; with
/// `--quiet` it shows nothing but the output.
#[test]
fn progress_is_shown_while_a_pod_starts_and_gives_way_to_its_output() {
    let fx = Fixture::new();
    fx.import_test_image();
    let app = "sleep 2; echo app-says-$((6*7))";
    let cmd = fx.command(&["run", "--rm", "kvmpod/test:1", app]);
    let term = Tmux::start(fx.path(), &cmd, (100, 30));
    let booting = term.wait_for("waiting for its agent", POD_LIMIT);
    assert!(booting.contains("booting pod "), "{booting}");
    term.wait_for("app-says-42", POD_LIMIT);
    assert_eq!(term.exit_status(CMD), 0, "{}", term.history());
    let screen = term.screen();
    assert!(screen.contains("app-says-42"), "{screen}");
    assert!(
        !screen.contains("waiting for its agent") && !screen.contains("preparing the pod"),
        "the progress line is still shown:\n{screen}"
    );
    drop(term);

    let quiet = fx.command(&["--quiet", "run", "--rm", "kvmpod/test:1", app]);
    let term = Tmux::start(fx.path(), &quiet, (100, 30));
    assert_eq!(term.exit_status(POD_LIMIT), 0, "{}", term.history());
    let shown: Vec<String> = term
        .history()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("Pane is dead"))
        .map(String::from)
        .collect();
    assert_eq!(shown, ["app-says-42"], "--quiet showed more");
    assert_eq!(fx.pods_created(), 0, "--rm left a pod behind");
    drop(term);
    fx.finish();
}

/// Ctrl-C on the terminal stops the pod as `stop` does: the app gets
/// SIGTERM and what it says then is shown; run exits with 130 and `--rm`
/// removes the pod.
#[test]
fn ctrl_c_stops_the_pod_gracefully() {
    let fx = Fixture::new();
    fx.import_test_image();
    let app = "trap 'echo app-got-term; exit 3' TERM; echo app-ready; \
               while :; do sleep 1; done";
    let cmd = fx.command(&["run", "--rm", "kvmpod/test:1", app]);
    let term = Tmux::start(fx.path(), &cmd, (100, 30));
    term.wait_for("app-ready", POD_LIMIT);
    term.press(&["C-c"]);
    assert_eq!(term.exit_status(POD_LIMIT), 130, "{}", term.history());
    let seen = term.history();
    assert!(seen.contains("app-got-term"), "{seen}");
    assert_eq!(fx.pods_created(), 0, "--rm left a pod behind");
    drop(term);
    fx.finish();
}

/// `run -i -t` gives the app this terminal's type and size from its
/// start, and a resize of the window reaches it (SIGWINCH, and the new
/// size); the app's exit status is run's.
#[test]
fn the_terminal_type_size_and_resizes_reach_the_app() {
    let fx = Fixture::new();
    fx.import_test_image();
    let cmd = fx.command(&["run", "--rm", "-i", "-t", "kvmpod/test:1", "sh"]);
    let term = Tmux::start(fx.path(), &cmd, (90, 25));
    let host_term = term.term();
    term.wait_for("/data $", POD_LIMIT);
    term.type_text("trap 'echo got-winch' WINCH; echo term=$TERM; stty size\n");
    term.wait_for(&format!("term={host_term}\n25 90\n"), CMD);
    term.resize((120, 40));
    term.wait_for("got-winch", CMD);
    term.type_text("stty size; exit 5\n");
    assert_eq!(term.exit_status(CMD), 5, "{}", term.history());
    assert!(term.history().contains("40 120\n"), "{}", term.history());
    assert_eq!(fx.pods_created(), 0, "--rm left a pod behind");
    drop(term);
    fx.finish();
}

/// The detach keys (ctrl-p ctrl-q) end an `attach` and leave the app
/// running, with what was typed before them done; they end an `exec -i -t`
/// and leave its command running.
#[test]
fn detach_keys_leave_the_app_running() {
    let fx = Fixture::new();
    fx.import_test_image();
    let started = fx.run(&["-d", "-i", "-t", "kvmpod/test:1", "sh"], POD_LIMIT);
    assert_eq!(started.code, Some(0), "{}", started.dump());
    let id = started.stdout.trim().to_string();
    let cmd = fx.command(&["attach", &id, "test"]);
    let term = Tmux::start(fx.path(), &cmd, (80, 24));
    term.type_text("echo typed > /tmp/before; echo done-$((1+1))\n");
    term.wait_for("done-2", CMD);
    term.press(&["C-p", "C-q"]);
    assert_eq!(term.exit_status(CMD), 0, "{}", term.history());
    assert!(
        term.history()
            .contains("detached from test; it keeps running"),
        "{}",
        term.history()
    );
    assert_eq!(fx.record(&id)["state"], "running");
    let cat = fx.host_ctl(&["exec", &id, "test", "--", "cat", "/tmp/before"], CMD);
    assert_eq!(cat.stdout, "typed\n", "{}", cat.dump());
    drop(term);

    let cmd = fx.command(&["exec", "-i", "-t", &id, "test", "--", "sh"]);
    let term = Tmux::start(fx.path(), &cmd, (80, 24));
    term.type_text("echo $$ > /tmp/exec-shell; echo ok-$((2+2))\n");
    term.wait_for("ok-4", CMD);
    term.press(&["C-p", "C-q"]);
    assert_eq!(term.exit_status(CMD), 0, "{}", term.history());
    assert!(
        term.history()
            .contains("detached; the command keeps running"),
        "{}",
        term.history()
    );
    let alive = fx.host_ctl(
        &[
            "exec",
            &id,
            "test",
            "--",
            "sh",
            "-c",
            "kill -0 $(cat /tmp/exec-shell) && echo still-running",
        ],
        CMD,
    );
    assert_eq!(alive.stdout, "still-running\n", "{}", alive.dump());
    let rm = fx.host_ctl(&["rm", "-f", &id], Duration::from_secs(120));
    assert_eq!(rm.code, Some(0), "{}", rm.dump());
    drop(term);
    fx.finish();
}

/// `run -i -t`'s detach keys leave the pod running, handed to a monitor
/// of its own (run's process is gone, the VM is not); what was typed
/// before them was done, `attach` reaches the app again and its exit ends
/// the pod with the app's status. `--rm` does not remove a pod left
/// running.
#[test]
fn run_it_detach_keys_hand_the_pod_to_a_monitor_of_its_own() {
    let fx = Fixture::new();
    fx.import_test_image();
    let cmd = fx.command(&["run", "--rm", "-i", "-t", "kvmpod/test:1", "sh"]);
    let term = Tmux::start(fx.path(), &cmd, (100, 30));
    term.wait_for("/data $", POD_LIMIT);
    term.type_text("echo typed > /tmp/before; echo done-$((3+3))\n");
    term.wait_for("done-6", CMD);
    term.press(&["C-p", "C-q"]);
    assert_eq!(term.exit_status(CMD), 0, "{}", term.history());
    let seen = term.history();
    assert!(seen.contains("keeps running"), "{seen}");
    drop(term);
    let pods = kvmpod_tests::fixture_pods(&fx);
    assert_eq!(pods.len(), 1, "{pods:?}");
    let id = &pods[0];
    let rec = fx.record(id);
    assert_eq!(rec["state"], "running", "{rec}");
    let cat = fx.host_ctl(&["exec", id, "test", "--", "cat", "/tmp/before"], CMD);
    assert_eq!(cat.stdout, "typed\n", "{}", cat.dump());

    let cmd = fx.command(&["attach", id, "test"]);
    let term = Tmux::start(fx.path(), &cmd, (100, 30));
    term.type_text("exit 3\n");
    assert_eq!(term.exit_status(CMD), 3, "{}", term.history());
    drop(term);
    let waited = fx.host_ctl(&["wait", id], POD_LIMIT);
    assert_eq!(waited.stdout, "3\n", "{}", waited.dump());
    let rm = fx.host_ctl(&["rm", id], CMD);
    assert_eq!(rm.code, Some(0), "{}", rm.dump());
    fx.finish();
}
