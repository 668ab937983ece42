//! A sandbox pod (`"sandbox": true`) takes apps while it runs, as rkt's app
//! sandbox did and as a Kubernetes pod takes its containers: `host-ctl app
//! add` boots nothing new, the added app gets its root and its own volumes
//! through the apps share and can mount the pod's volumes; its output is
//! persisted and its exit recorded; `host-ctl app rm` takes it out once it
//! has exited (or, with --force, kills it first).

use std::fs;
use std::time::{Duration, Instant};

use kvmpod_tests::{Fixture, CMD};
use serde_json::{json, Value};

/// The live state of app `app` in `host-ctl status`, once it is `want`.
fn wait_for_state(fx: &Fixture, id: &str, app: &str, want: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let st = fx.host_ctl(&["status", id, "--format", "json"], CMD);
        let v: Value = serde_json::from_str(&st.stdout).unwrap_or(Value::Null);
        let found = v["live"]["apps"]
            .as_array()
            .and_then(|apps| apps.iter().find(|a| a["name"] == app).cloned());
        if let Some(a) = found.filter(|a| a["state"] == want) {
            return a;
        }
        assert!(
            Instant::now() < until,
            "app {app} never {want}:\n{}",
            st.dump()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn apps_are_added_to_and_removed_from_a_running_sandbox() {
    let fx = Fixture::new();
    let shared = fx.host_dir("shared", &[]);
    let data = fx.host_dir("data", &[("in", "data for web\n")]);
    let manifest = fx
        .pod()
        .pod_field("sandbox", json!(true))
        .host_volume("shared", &shared)
        .app("pause", "while true; do sleep 1; done")
        .mount("shared", "/shared")
        .write("sandbox.json");
    let id = fx.detach(&manifest, &[]);

    // An app with a volume of its own (read-only) and the pod's.
    let web = fx.write_manifest(
        "web.json",
        &json!({
            "volumes": [{"name": "web-data", "kind": "host", "source": data}],
            "apps": [{
                "name": "web", "rootfs": fx.root(),
                "exec": ["/bin/sh", "-c",
                         "echo hello from web; cat /data/in; echo out > /shared/from-web; \
                          touch /data/new 2>/dev/null || echo data is read-only; exit 4"],
                "mountPoints": [{"volume": "web-data", "path": "/data", "readOnly": true},
                                {"volume": "shared", "path": "/shared"}]
            }]
        }),
    );
    let add = fx.host_ctl(&["app", "add", &id, web.to_str().unwrap()], CMD);
    assert_eq!(add.code, Some(0), "{}", add.dump());
    assert_eq!(add.stdout.trim(), "web");
    let logs = fx.wait_for_log(&id, "web", "data is read-only");
    assert_eq!(
        logs, "hello from web\ndata for web\ndata is read-only\n",
        "{logs}"
    );
    let exited = wait_for_state(&fx, &id, "web", "exited");
    assert_eq!(exited["exitCode"], 4, "{exited}");
    // Following one app ends with that app, while the pod runs on.
    let followed = fx.host_ctl(&["logs", "-f", &id, "web"], CMD);
    assert_eq!(followed.code, Some(0), "{}", followed.dump());
    assert_eq!(followed.stdout, logs);
    assert_eq!(
        fs::read_to_string(shared.join("from-web")).unwrap(),
        "out\n"
    );
    assert!(!data.join("new").exists());

    removal_rules(&fx, &id, &web);
    forced_removal(&fx, &id);

    let rm = fx.host_ctl(&["rm", "-f", &id], CMD);
    assert_eq!(rm.code, Some(0), "{}", rm.dump());
    fx.finish();
}

/// Names stay unique; only added apps go, and only once they exited; an
/// app's output goes with it.
fn removal_rules(fx: &Fixture, id: &str, web: &std::path::Path) {
    // Names stay unique; only added apps go, and only once they exited.
    let again = fx.host_ctl(&["app", "add", id, web.to_str().unwrap()], CMD);
    assert_ne!(again.code, Some(0), "{}", again.dump());
    assert!(
        again.stderr.contains("already has an app named \"web\""),
        "{}",
        again.dump()
    );
    let boot_app = fx.host_ctl(&["app", "rm", id, "pause"], CMD);
    assert_ne!(boot_app.code, Some(0), "{}", boot_app.dump());
    assert!(
        boot_app.stderr.contains("no added app"),
        "{}",
        boot_app.dump()
    );
    let rm = fx.host_ctl(&["app", "rm", id, "web"], CMD);
    assert_eq!(rm.code, Some(0), "{}", rm.dump());
    // Its volume's files are the host's: unmounted, never deleted.
    assert_eq!(
        fs::read_to_string(fx.path().join("data/in")).unwrap(),
        "data for web\n"
    );
    let st = fx.host_ctl(&["status", id, "--format", "json"], CMD);
    assert!(!st.stdout.contains("\"web\""), "{}", st.dump());
    // Its output goes with it, as with `docker rm`.
    let gone = fx.host_ctl(&["logs", id, "web"], CMD);
    assert!(
        gone.stderr.contains("has no app named \"web\""),
        "{}",
        gone.dump()
    );
}

/// A running app is removed only with --force; the name can come back.
fn forced_removal(fx: &Fixture, id: &str) {
    // A running app is removed only with --force; the name can come back.
    let sleeper = fx.write_manifest(
        "sleeper.json",
        &json!({"apps": [{"name": "web", "rootfs": fx.root(),
                          "exec": ["/bin/sh", "-c", "echo second web; exec sleep 600"]}]}),
    );
    let add = fx.host_ctl(&["app", "add", id, sleeper.to_str().unwrap()], CMD);
    assert_eq!(add.code, Some(0), "{}", add.dump());
    fx.wait_for_log(id, "web", "second web");
    let busy = fx.host_ctl(&["app", "rm", id, "web"], CMD);
    assert_ne!(busy.code, Some(0), "{}", busy.dump());
    assert!(busy.stderr.contains("still running"), "{}", busy.dump());
    let forced = fx.host_ctl(&["app", "rm", "--force", id, "web"], CMD);
    assert_eq!(forced.code, Some(0), "{}", forced.dump());
    let st = fx.host_ctl(&["status", id, "--format", "json"], CMD);
    assert!(!st.stdout.contains("\"web\""), "{}", st.dump());
    let pod_dir = fx.state_dir().join("pods").join(id);
    for d in ["apps/web", "apps.d/web"] {
        assert!(
            !pod_dir.join(d).exists(),
            "{d} is left in {}",
            pod_dir.display()
        );
    }
    wait_for_state(fx, id, "pause", "running");
}

/// A pod that is not a sandbox refuses new apps, and says why.
#[test]
fn a_pod_that_is_not_a_sandbox_takes_no_apps() {
    let fx = Fixture::new();
    let manifest = fx
        .one_app("pause", "while true; do sleep 1; done")
        .write("plain.json");
    let id = fx.detach(&manifest, &[]);
    let web = fx.write_manifest(
        "web.json",
        &json!({"apps": [{"name": "web", "rootfs": fx.root(), "exec": ["/bin/true"]}]}),
    );
    let add = fx.host_ctl(&["app", "add", &id, web.to_str().unwrap()], CMD);
    assert_ne!(add.code, Some(0), "{}", add.dump());
    assert!(add.stderr.contains("is not a sandbox"), "{}", add.dump());
    let rm = fx.host_ctl(&["rm", "-f", &id], CMD);
    assert_eq!(rm.code, Some(0), "{}", rm.dump());
    fx.finish();
}
