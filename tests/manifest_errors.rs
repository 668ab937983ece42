//! A bad manifest is refused before any VM starts, with a message naming
//! the field. (The rules themselves are unit-tested in kvmpod-api; this
//! proves host-ctl applies them first and creates nothing.)

use std::time::Duration;

use kvmpod_tests::Fixture;
use serde_json::{json, Value};

fn good(fx: &Fixture) -> Value {
    let root = fx.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let data = fx.host_dir("data", &[]);
    json!({
        "volumes": [
            {"name": "data", "kind": "host", "source": data},
            {"name": "scratch", "kind": "empty"}
        ],
        "apps": [
            {"name": "one", "rootfs": root, "exec": ["/bin/true"],
             "mountPoints": [{"volume": "data", "path": "/data"}]},
            {"name": "two", "rootfs": root, "exec": ["/bin/true"]}
        ]
    })
}

type Edit = fn(&mut Value);

/// Each case: what it breaks, the edit to the good manifest, and the field
/// the error must name.
fn cases() -> Vec<(&'static str, Edit, &'static str)> {
    vec![
        (
            "bad app name",
            |m| m["apps"][0]["name"] = json!("Web_1"),
            "apps[0].name",
        ),
        (
            "bad volume name",
            |m| m["volumes"][1]["name"] = json!("-x"),
            "volumes[1].name",
        ),
        (
            "duplicate app",
            |m| m["apps"][1]["name"] = json!("one"),
            "apps[1].name",
        ),
        (
            "duplicate volume",
            |m| m["volumes"][1]["name"] = json!("data"),
            "volumes[1].name",
        ),
        (
            "missing volume",
            |m| m["apps"][0]["mountPoints"][0]["volume"] = json!("dta"),
            "apps[0].mountPoints[0].volume",
        ),
        (
            "relative path",
            |m| m["apps"][0]["mountPoints"][0]["path"] = json!("data"),
            "apps[0].mountPoints[0].path",
        ),
        (
            "dotdot path",
            |m| m["apps"][0]["mountPoints"][0]["path"] = json!("/a/../../etc"),
            "apps[0].mountPoints[0].path",
        ),
        (
            "missing source",
            |m| m["volumes"][0]["source"] = json!("/nonexistent/kvmpod"),
            "volumes[0].source",
        ),
        (
            "no source",
            |m| {
                m["volumes"][0].as_object_mut().unwrap().remove("source");
            },
            "volumes[0].source",
        ),
        (
            "empty exec",
            |m| m["apps"][1]["exec"] = json!([]),
            "apps[1].exec",
        ),
        (
            "missing rootfs",
            |m| m["apps"][1]["rootfs"] = json!("nowhere"),
            "apps[1].rootfs",
        ),
        (
            "unknown field",
            |m| m["apps"][1]["readonly"] = json!(true),
            "apps[1].readonly",
        ),
        (
            "bad kind",
            |m| m["volumes"][1]["kind"] = json!("tmp"),
            "volumes[1].kind",
        ),
    ]
}

#[test]
fn every_rule_is_enforced_before_a_vm_starts() {
    let fx = Fixture::new();
    for (what, edit, field) in cases() {
        let mut m = good(&fx);
        edit(&mut m);
        let path = fx.write_manifest("bad.json", &m);
        let out = fx.run(&[path.to_str().unwrap()], Duration::from_secs(30));
        assert_eq!(out.code, Some(125), "{what}: {}", out.dump());
        assert!(
            out.stderr.contains(field),
            "{what}: the error does not name {field}\n{}",
            out.dump()
        );
        assert!(
            out.stderr.contains("bad.json"),
            "{what}: the error does not name the file\n{}",
            out.dump()
        );
        assert_eq!(fx.pods_created(), 0, "{what}: a pod directory was created");
    }
    // The control: the same manifest unedited passes validation, so each
    // refusal above is the edit's doing. (`args` validates as `run` does
    // and boots nothing; the boot tests run real pods.)
    let path = fx.write_manifest("good.json", &good(&fx));
    let out = fx.host_ctl(&["args", path.to_str().unwrap()], Duration::from_secs(30));
    assert_eq!(
        out.code,
        Some(0),
        "the good manifest was refused\n{}",
        out.dump()
    );
    assert!(!out.stderr.contains("invalid"), "{}", out.dump());
    // `args` creates nothing: no state directory, not even the kernel cache.
    assert!(
        !fx.state_dir().exists(),
        "host-ctl args wrote to {}",
        fx.state_dir().display()
    );
    fx.finish_without_pods();
}

#[test]
fn several_problems_are_reported_together() {
    let fx = Fixture::new();
    let mut m = good(&fx);
    m["apps"][0]["name"] = json!("BAD");
    m["apps"][1]["exec"] = json!([]);
    let path = fx.write_manifest("bad.json", &m);
    let out = fx.run(&[path.to_str().unwrap()], Duration::from_secs(30));
    assert_eq!(out.code, Some(125));
    assert!(
        out.stderr.contains("apps[0].name") && out.stderr.contains("apps[1].exec"),
        "{}",
        out.dump()
    );
    fx.finish_without_pods();
}
