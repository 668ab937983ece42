//! The command line's conventions, without booting anything: shell
//! completion scripts and manual pages generated from the same clap
//! definitions as `--help`, and `info` in its two formats.

use kvmpod_tests::{Fixture, CMD};

/// `completion bash|zsh|fish` prints a script its shell accepts (bash
/// checks the syntax of its own), naming every visible command.
#[test]
fn completion_scripts_know_every_command() {
    let fx = Fixture::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = fx.host_ctl(&["completion", shell], CMD);
        assert_eq!(out.code, Some(0), "{}", out.dump());
        for command in ["run", "inspect", "wait", "info", "pool", "completion"] {
            assert!(out.stdout.contains(command), "{shell}: no {command}");
        }
        // Whole words: "top" is also in "stop".
        let words: Vec<&str> = out
            .stdout
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .collect();
        for command in ["top", "stats", "exec", "cp"] {
            assert!(words.contains(&command), "{shell}: no {command}");
        }
        // Internal commands are not offered.
        assert!(!out.stdout.contains("vmm-jail"), "{shell}");
    }
    let bash = fx.host_ctl(&["completion", "bash"], CMD);
    let script = fx.path().join("host-ctl.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("running bash");
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    let bad = fx.host_ctl(&["completion", "tcsh"], CMD);
    assert_eq!(bad.code, Some(2), "{}", bad.dump());
    fx.finish_without_pods();
}

/// `manpages DIR` writes a page per visible command and subcommand, each
/// a roff document titled after its command.
#[test]
fn manual_pages_cover_every_visible_command() {
    let fx = Fixture::new();
    let dir = fx.path().join("man1");
    let out = fx.host_ctl(&["manpages", dir.to_str().unwrap()], CMD);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    for page in [
        "host-ctl.1",
        "host-ctl-run.1",
        "host-ctl-wait.1",
        "host-ctl-top.1",
        "host-ctl-cp.1",
        "host-ctl-pool-start.1",
        "host-ctl-image-import.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
        let title = page.trim_end_matches(".1");
        assert!(text.contains(&format!(".TH {title} 1")), "{page}:\n{text}");
    }
    let run = std::fs::read_to_string(dir.join("host-ctl-run.1")).unwrap();
    assert!(run.contains("detach"), "{run}");
    for hidden in [
        "host-ctl-monitor.1",
        "host-ctl-keeper.1",
        "host-ctl-manpages.1",
    ] {
        assert!(!dir.join(hidden).exists(), "{hidden}");
    }
    fx.finish_without_pods();
}

/// The listings' JSON carries every column of their tables: the images
/// and stage1 images (pods, stats and the pool are checked where their
/// boot tests have them running).
#[test]
fn listings_json_carries_their_tables_columns() {
    let fx = Fixture::new();
    fx.import_test_image();
    let built = fx.host_ctl(&["stage1", "build"], kvmpod_tests::POD_LIMIT);
    assert_eq!(built.code, Some(0), "{}", built.dump());
    let listing = |args: &[&str]| -> (String, Vec<serde_json::Value>) {
        let table = fx.host_ctl(args, CMD);
        assert_eq!(table.code, Some(0), "{}", table.dump());
        let mut with_json = args.to_vec();
        with_json.extend(["--format", "json"]);
        let json = fx.host_ctl(&with_json, CMD);
        let items: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
        (table.stdout, items.as_array().expect("a list").clone())
    };
    let (table, items) = listing(&["image", "ls"]);
    kvmpod_tests::table_and_json_agree(
        &table,
        &items,
        &[
            ("NAME", "names"),
            ("DIGEST", "digest"),
            ("SIZE", "size"),
            ("CREATED", "created"),
        ],
    );
    let (table, items) = listing(&["stage1", "ls"]);
    kvmpod_tests::table_and_json_agree(
        &table,
        &items,
        &[
            ("NAME", "name"),
            ("DIGEST", "digest"),
            ("KERNEL", "kernel"),
            ("SIZE", "size"),
            ("PATH", "path"),
        ],
    );
    assert!(
        std::path::Path::new(items[0]["path"].as_str().expect("a path")).is_file(),
        "{items:?}"
    );
    fx.finish_without_pods();
}
