//! Boot test of `host-ctl cp`: a host tree copied into an app and back out
//! (content, modes, a symlink, a large file, a long name), a tar archive on
//! stdout, a missing source's error, and the symlink escapes: a path
//! through a symlink out of the app's root resolves inside it (copying
//! out), and a copy in never writes through one (a destination that is
//! one, or an archive's own `dir -> /` then `dir/file`).
//!
//! The pod has two apps, `a` and `b`, each with a root of its own at
//! `/opt/stage2/<app>/rootfs` in the guest: from `a`'s root,
//! `../../b/rootfs` and `/opt/stage2/b/rootfs` are `b`'s root if a symlink
//! is ever followed out of `a`'s, so what `b` holds shows an escape.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use kvmpod_tests::{Fixture, Outcome, CMD};

const LONG: &str = "a-file-name-long-enough-that-its-path-does-not-fit-the-hundred-bytes-of-a-ustar-header-by-itself.txt";

/// The host tree copied in: nested directories, modes 0750 and 0755, a
/// relative symlink, a file over 1 MiB and a name over 100 bytes.
fn host_tree(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    fs::create_dir_all(src.join("nested/deep")).unwrap();
    fs::write(src.join("nested/deep/file.txt"), "deep\n").unwrap();
    fs::write(src.join("nested/deep").join(LONG), "long\n").unwrap();
    fs::write(src.join("private.sh"), "#!/bin/sh\necho private\n").unwrap();
    fs::write(src.join("run.sh"), "#!/bin/sh\necho run\n").unwrap();
    set_mode(&src.join("private.sh"), 0o750);
    set_mode(&src.join("run.sh"), 0o755);
    let big: Vec<u8> = (0..1_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(src.join("big.bin"), big).unwrap();
    symlink("nested/deep/file.txt", src.join("link")).unwrap();
    src
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Every entry below `root`: relative path, kind, mode, content or target.
fn listing(root: &Path) -> Vec<(String, String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let mode = m.mode() & 0o7777;
            if m.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                out.push((
                    rel,
                    "link".into(),
                    0,
                    t.as_os_str().as_encoded_bytes().to_vec(),
                ));
            } else if m.is_dir() {
                out.push((rel, "dir".into(), mode, Vec::new()));
                todo.push(p);
            } else {
                out.push((rel, "file".into(), mode, fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn cp(fx: &Fixture, src: &str, dest: &str) -> Outcome {
    fx.host_ctl(&["cp", src, dest], CMD)
}

fn ok(out: &Outcome) {
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "cp prints nothing on success\n{}",
        out.dump()
    );
}

fn sh(fx: &Fixture, id: &str, app: &str, script: &str) -> String {
    let out = fx.host_ctl(&["exec", id, app, "--", "/bin/sh", "-c", script], CMD);
    assert_eq!(out.code, Some(0), "{script}\n{}", out.dump());
    out.stdout
}

/// `host-ctl cp <args>` with `input` on stdin; its exit code and output.
fn cp_with_stdin(fx: &Fixture, args: &[&str], input: &[u8]) -> (Option<i32>, Vec<u8>, String) {
    let mut cmd = fx.command(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("starting host-ctl");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cp_copies_trees_both_ways_and_never_leaves_the_apps_root() {
    let fx = Fixture::new();
    let manifest = fx
        .pod()
        .app("a", "sleep 1000")
        .app("b", "sleep 1000")
        .write("pod.json");
    let id = fx.detach(&manifest, &[]);

    round_trip(&fx, &id);
    tar_on_stdout(&fx, &id);
    errors(&fx, &id);
    escapes_out(&fx, &id);
    escapes_in(&fx, &id);

    let stop = fx.host_ctl(
        &["stop", "--timeout", "2", &id],
        std::time::Duration::from_secs(120),
    );
    assert_eq!(stop.code, Some(0), "{}", stop.dump());
    let gone = cp(&fx, &format!("{id}:a:/tmp"), fx.path().to_str().unwrap());
    assert_eq!(gone.code, Some(125), "{}", gone.dump());
    assert!(
        gone.stderr.contains("is not running") || gone.stderr.contains("exited"),
        "{}",
        gone.dump()
    );
    assert_eq!(fx.host_ctl(&["rm", &id], CMD).code, Some(0));
    fx.finish();
}

/// In, checked in the guest, and back out twice: into an existing
/// directory, and as a new name.
fn round_trip(fx: &Fixture, id: &str) {
    let src = host_tree(&fx.path().join("host"));
    ok(&cp(fx, src.to_str().unwrap(), &format!("{id}:a:/tmp")));

    let stat = sh(
        fx,
        id,
        "a",
        "cd /tmp/src && stat -c '%n %a %F' private.sh run.sh nested nested/deep big.bin && ls -l link && stat -c %s big.bin",
    );
    assert!(stat.contains("private.sh 750 regular file"), "{stat}");
    assert!(stat.contains("run.sh 755 regular file"), "{stat}");
    assert!(
        stat.contains("nested/deep") && stat.contains("directory"),
        "{stat}"
    );
    assert!(stat.contains("link -> nested/deep/file.txt"), "{stat}");
    assert!(stat.contains("1500000"), "{stat}");
    assert_eq!(sh(fx, id, "a", "/tmp/src/run.sh"), "run\n");
    assert_eq!(sh(fx, id, "a", "cat /tmp/src/link"), "deep\n");
    let long = sh(fx, id, "a", &format!("cat /tmp/src/nested/deep/{LONG}"));
    assert_eq!(long, "long\n");

    let back = fx.path().join("back");
    fs::create_dir(&back).unwrap();
    ok(&cp(fx, &format!("{id}:a:/tmp/src"), back.to_str().unwrap()));
    let want = listing(&src);
    assert_eq!(
        want.len(),
        8,
        "{:?}",
        want.iter().map(|e| &e.0).collect::<Vec<_>>()
    );
    assert_eq!(listing(&back.join("src")), want);

    let renamed = fx.path().join("renamed");
    ok(&cp(
        fx,
        &format!("{id}:a:/tmp/src"),
        renamed.to_str().unwrap(),
    ));
    assert_eq!(listing(&renamed), want);
    // One file, to a new name.
    let one = fx.path().join("one.sh");
    ok(&cp(
        fx,
        &format!("{id}:a:/tmp/src/private.sh"),
        one.to_str().unwrap(),
    ));
    assert_eq!(
        fs::read(&one).unwrap(),
        fs::read(src.join("private.sh")).unwrap()
    );
    assert_eq!(fs::metadata(&one).unwrap().mode() & 0o7777, 0o750);
}

/// `-` as the destination: a tar archive on stdout.
fn tar_on_stdout(fx: &Fixture, id: &str) {
    let (code, stdout, stderr) =
        cp_with_stdin(fx, &["cp", &format!("{id}:a:/tmp/src/nested"), "-"], b"");
    assert_eq!(code, Some(0), "{stderr}");
    let mut archive = tar::Archive::new(&stdout[..]);
    let mut names = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        if name == "nested/deep/file.txt" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut e, &mut text).unwrap();
            assert_eq!(text, "deep\n");
        }
        names.push(name);
    }
    names.sort();
    let want = [
        "nested/".to_string(),
        "nested/deep/".to_string(),
        format!("nested/deep/{LONG}"),
        "nested/deep/file.txt".to_string(),
    ];
    assert_eq!(names, want);
}

fn errors(fx: &Fixture, id: &str) {
    let out = cp(
        fx,
        &format!("{id}:a:/no/such/path"),
        fx.path().to_str().unwrap(),
    );
    assert_eq!(out.code, Some(1), "{}", out.dump());
    assert!(out.stderr.contains("/no/such/path"), "{}", out.dump());
    let missing = fx.path().join("not-here");
    let out = cp(fx, missing.to_str().unwrap(), &format!("{id}:a:/tmp"));
    assert_eq!(out.code, Some(125), "{}", out.dump());
    assert!(out.stderr.contains("not-here"), "{}", out.dump());
    let out = cp(fx, "/etc/hostname", "/tmp/x");
    assert_eq!(out.code, Some(125), "{}", out.dump());
    assert!(out.stderr.contains("POD:APP:/path"), "{}", out.dump());
    let out = cp(fx, &format!("{id}:zz:/tmp"), "/tmp/x");
    assert_eq!(out.code, Some(125), "{}", out.dump());
    assert!(out.stderr.contains("no app named \"zz\""), "{}", out.dump());
}

/// Copying out through `a`'s symlinks to `b`'s root, relative and
/// absolute: they resolve inside `a`'s root, where nothing is at first
/// (an error), then a decoy is (what comes back); never `b`'s file.
fn escapes_out(fx: &Fixture, id: &str) {
    sh(fx, id, "b", "echo secret-of-b > /secret");
    sh(
        fx,
        id,
        "a",
        "ln -s ../../b/rootfs /esc && ln -s /opt/stage2/b/rootfs /abs",
    );
    for link in ["esc", "abs"] {
        let dest = fx.path().join(format!("out-{link}"));
        let out = cp(
            fx,
            &format!("{id}:a:/{link}/secret"),
            dest.to_str().unwrap(),
        );
        assert_eq!(out.code, Some(1), "{}", out.dump());
        assert!(out.stderr.contains("No such file"), "{}", out.dump());
        assert!(!dest.exists());
    }
    sh(
        fx,
        id,
        "a",
        "mkdir -p /b/rootfs /opt/stage2/b/rootfs && echo inside-a > /b/rootfs/secret && echo inside-a > /opt/stage2/b/rootfs/secret",
    );
    for link in ["esc", "abs"] {
        let dest = fx.path().join(format!("out-{link}"));
        ok(&cp(
            fx,
            &format!("{id}:a:/{link}/secret"),
            dest.to_str().unwrap(),
        ));
        assert_eq!(fs::read_to_string(&dest).unwrap(), "inside-a\n", "{link}");
    }
    // The symlink itself, named, is copied as a symlink.
    let dest = fx.path().join("the-link");
    ok(&cp(fx, &format!("{id}:a:/esc"), dest.to_str().unwrap()));
    assert_eq!(fs::read_link(&dest).unwrap(), Path::new("../../b/rootfs"));
}

/// An archive: `(name, target)` symlinks when a target is given, else
/// files holding "escaped".
fn archive(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, target) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        match target {
            Some(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, name, t).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(8);
                b.append_data(&mut h, name, &b"escaped\n"[..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Copying in: destinations that are symlinks out of `a`'s root resolve
/// inside it; an archive's `dir -> /` (or `-> ../../b/rootfs`) then
/// `dir/file` is refused at `dir/file`, and nothing reaches `b`.
fn escapes_in(fx: &Fixture, id: &str) {
    sh(
        fx,
        id,
        "a",
        "mkdir -p /b/rootfs/tmp /opt/stage2/b/rootfs/tmp /in && ln -s ../../b/rootfs/tmp /escdir && ln -s /opt/stage2/b/rootfs/tmp /absdir && ln -s ../../b/rootfs/etc /dangling",
    );
    let note = fx
        .host_dir("notes", &[("note.txt", "note\n")])
        .join("note.txt");
    for link in ["escdir", "absdir"] {
        ok(&cp(fx, note.to_str().unwrap(), &format!("{id}:a:/{link}")));
    }
    let inside = sh(
        fx,
        id,
        "a",
        "cat /b/rootfs/tmp/note.txt /opt/stage2/b/rootfs/tmp/note.txt",
    );
    assert_eq!(inside, "note\nnote\n");
    assert_eq!(sh(fx, id, "b", "ls /tmp"), "", "a copy reached b's root");
    // A destination symlink to nothing inside a's root is refused, and
    // stays a symlink (b's /etc is where it would lead out of the root).
    let out = cp(fx, note.to_str().unwrap(), &format!("{id}:a:/dangling"));
    assert_eq!(out.code, Some(1), "{}", out.dump());
    assert!(
        out.stderr.contains("/dangling is a symlink to nothing"),
        "{}",
        out.dump()
    );
    assert_eq!(
        sh(fx, id, "a", "readlink /dangling"),
        "../../b/rootfs/etc\n"
    );
    assert_eq!(
        sh(
            fx,
            id,
            "b",
            "ls /etc/note.txt /etc/dangling 2>/dev/null; true"
        ),
        ""
    );

    for target in ["/", "../../b/rootfs"] {
        let a = archive(&[("dir", Some(target)), ("dir/file", None)]);
        let (code, _, stderr) = cp_with_stdin(fx, &["cp", "-", &format!("{id}:a:/in")], &a);
        assert_eq!(code, Some(1), "{target}: {stderr}");
        assert!(stderr.contains("dir/file"), "{target}: {stderr}");
        // The symlink itself was made (the tar crate writes "/" as "//").
        let link = sh(fx, id, "a", "readlink /in/dir");
        assert_eq!(
            link.trim_end().trim_end_matches('/'),
            target.trim_end_matches('/')
        );
    }
    let names = ["absolute", "dotdot"];
    for (i, bad) in ["/abs-file", "x/../../up-file"].iter().enumerate() {
        // The tar crate refuses to write such names; they go in raw.
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.as_old_mut().name[..bad.len()].copy_from_slice(bad.as_bytes());
        h.set_cksum();
        let mut raw = h.as_bytes().to_vec();
        raw.extend_from_slice(&[0u8; 1024]);
        let (code, _, stderr) = cp_with_stdin(fx, &["cp", "-", &format!("{id}:a:/in")], &raw);
        assert_eq!(code, Some(1), "{}: {stderr}", names[i]);
        assert!(stderr.contains(bad), "{stderr}");
    }
    let stray = sh(fx, id, "b", "ls /file /up-file /abs-file 2>/dev/null; true");
    assert_eq!(stray, "", "a copy reached b's root");
    let stray = sh(
        fx,
        id,
        "a",
        "ls /file /up-file /abs-file /in/file 2>/dev/null; true",
    );
    assert_eq!(stray, "", "a refused entry was written");
}
