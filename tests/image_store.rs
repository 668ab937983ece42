//! The image store without a VM: imports of OCI layouts (directory and tar)
//! and docker-archives, the snapshot format overlayfs reads (whiteouts,
//! opaque directories, links, modes, owners, xattrs), refusals that leave
//! the store as it was, leases, removal and pruning. Runs as root (device
//! nodes for whiteouts, chown).

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use host_ctl::commands::image::{run as image_cmd, ImageCommand};
use host_ctl::commands::Format;
use host_ctl::image::{ImageError, ImageStore, ImportEvent};
use kvmpod_tests::images::{
    docker_files, listing, oci_files, oci_multiarch_files, truncate, write_dir, write_tar,
    BuiltImage, Compression, Config, Entry, ImageSpec, Layer, MTIME,
};
use tempfile::TempDir;

struct Store {
    dir: TempDir,
    store: ImageStore,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(dir.path()).expect("opening the store");
        Store { dir, store }
    }

    fn images_dir(&self) -> PathBuf {
        self.dir.path().join("images")
    }

    /// Writes an OCI layout directory of `images` and returns it.
    fn oci_dir(&self, name: &str, images: &[(&BuiltImage, Option<&str>)]) -> PathBuf {
        let dir = self.dir.path().join("src").join(name);
        write_dir(&dir, &oci_files(images));
        dir
    }

    fn import_err(&self, source: &Path) -> String {
        let before = listing(&self.images_dir());
        let err = self
            .store
            .import(source, None)
            .expect_err("the import should fail")
            .to_string();
        assert_eq!(
            listing(&self.images_dir()),
            before,
            "the store changed: {err}"
        );
        err
    }
}

fn base_layer() -> Layer {
    Layer::new(vec![
        Entry::dir("etc"),
        Entry::file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
        Entry::file("etc/shadow", "root:*::::::\n")
            .mode(0o640)
            .owner(0, 42),
        Entry::dir("bin"),
        Entry::file("bin/tool", "#!tool\n").mode(0o4755).owner(0, 0),
        Entry::hardlink("bin/tool2", "bin/tool"),
        Entry::symlink("bin/sh", "/bin/tool"),
        Entry::dir("data").owner(1000, 1000).mode(0o750),
        Entry::file("data/a", "a"),
        Entry::file("data/b", "b"),
        Entry::dir("data/sub"),
        Entry::file("data/sub/x", "x"),
        Entry::file("note", "n")
            .xattr("user.note", "hello")
            .owner(7, 8),
        Entry::dir("tmp").mode(0o1777),
    ])
}

fn upper_layer() -> Layer {
    Layer::new(vec![
        Entry::whiteout("etc/passwd"),
        Entry::dir("data").owner(1000, 1000).mode(0o750),
        Entry::opaque("data"),
        Entry::file("data/c", "c"),
        Entry::dir("data/sub"),
        Entry::file("data/sub/y", "y"),
        Entry::hardlink("usr-tool", "bin/tool"),
        Entry::dir("shared").mode(0o2775).owner(0, 50),
        Entry::fifo("shared/pipe").mode(0o620),
    ])
}

fn stat(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

fn is_whiteout(p: &Path) -> bool {
    let m = stat(p);
    m.file_type().is_char_device() && m.rdev() == 0
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// An xattr of `path` itself, or None.
fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).expect("path");
    let n = CString::new(name).expect("name");
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and outlive the call; buf has
    // buf.len() writable bytes.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

#[test]
fn layers_apply_with_whiteouts_opaque_dirs_links_modes_and_xattrs() {
    let s = Store::new();
    let image = ImageSpec::new(vec![
        base_layer().compressed(Compression::Gzip),
        upper_layer().compressed(Compression::Zstd),
    ])
    .build();
    let src = s.oci_dir("img", &[(&image, Some("example.com/app:1"))]);
    let records = s.store.import(&src, None).expect("import");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].digest, image.digest);
    assert_eq!(records[0].names, vec!["example.com/app:1"]);
    assert_eq!(records[0].chain_ids, image.chain_ids());
    let size: usize = image.layers.iter().map(|l| l.tar.len()).sum();
    assert_eq!(records[0].size, size as u64);
    let resolved = s.store.resolve("example.com/app:1").expect("resolve");
    let [low, up] = &resolved.layers[..] else {
        panic!("{:?}", resolved.layers)
    };
    assert_eq!(low, &s.store.snapshot_dir(&image.chain_ids()[0]));

    check_base(low);
    check_upper(low, up);
}

/// The base layer as the archive says.
fn check_base(low: &Path) {
    assert_eq!(
        fs::read_to_string(low.join("etc/passwd")).unwrap(),
        "root:x:0:0::/root:/bin/sh\n"
    );
    let shadow = stat(&low.join("etc/shadow"));
    assert_eq!(
        (shadow.mode() & 0o7777, shadow.uid(), shadow.gid()),
        (0o640, 0, 42)
    );
    let tool = stat(&low.join("bin/tool"));
    assert_eq!(tool.mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!(tool.mtime(), MTIME as i64);
    assert_eq!(
        stat(&low.join("bin/tool2")).ino(),
        tool.ino(),
        "hard link in one layer"
    );
    assert_eq!(
        fs::read_link(low.join("bin/sh")).unwrap(),
        Path::new("/bin/tool")
    );
    let data = stat(&low.join("data"));
    assert_eq!(
        (data.mode() & 0o7777, data.uid(), data.gid()),
        (0o750, 1000, 1000)
    );
    assert_eq!(
        data.mtime(),
        MTIME as i64,
        "directory mtime set after its content"
    );
    assert_eq!(
        stat(&low.join("tmp")).mode() & 0o7777,
        0o1777,
        "sticky kept"
    );
    let note = stat(&low.join("note"));
    assert_eq!((note.uid(), note.gid()), (7, 8));
    assert_eq!(
        xattr(&low.join("note"), "user.note").as_deref(),
        Some(&b"hello"[..])
    );
}

/// The upper layer: a whiteout, an opaque directory spelled out, a hard
/// link into the base layer.
fn check_upper(low: &Path, up: &Path) {
    let tool = stat(&low.join("bin/tool"));
    assert!(is_whiteout(&up.join("etc/passwd")));
    assert_eq!(names(&up.join("data")), vec!["a", "b", "c", "sub"]);
    assert!(is_whiteout(&up.join("data/a")) && is_whiteout(&up.join("data/b")));
    assert_eq!(fs::read_to_string(up.join("data/c")).unwrap(), "c");
    assert_eq!(names(&up.join("data/sub")), vec!["x", "y"]);
    assert!(
        is_whiteout(&up.join("data/sub/x")),
        "the opaque dir hides its lower subdirs' content"
    );
    assert_eq!(fs::read_to_string(up.join("data/sub/y")).unwrap(), "y");
    assert_eq!(xattr(&up.join("data"), "trusted.overlay.opaque"), None);
    assert_eq!(
        stat(&up.join("usr-tool")).ino(),
        tool.ino(),
        "hard link to a lower layer"
    );
    let shared = stat(&up.join("shared"));
    assert_eq!((shared.mode() & 0o7777, shared.gid()), (0o2775, 50));
    let pipe = stat(&up.join("shared/pipe"));
    assert!(pipe.file_type().is_fifo());
    assert_eq!(pipe.mode() & 0o7777, 0o620);
}

fn simple_image(tag: &str, c: Compression) -> ImageSpec {
    ImageSpec::new(vec![
        Layer::new(vec![
            Entry::dir("etc"),
            Entry::file("etc/os-release", "ID=test\n"),
        ])
        .compressed(c),
        Layer::new(vec![Entry::file(&format!("{tag}.txt"), tag)]).compressed(c),
    ])
}

#[test]
fn imports_oci_dir_oci_tar_and_docker_archives() {
    let s = Store::new();
    for (i, c) in [Compression::None, Compression::Gzip, Compression::Zstd]
        .into_iter()
        .enumerate()
    {
        let image = simple_image("same", c).build();
        let dir = s.oci_dir(
            &format!("dir{i}"),
            &[(&image, Some(&format!("oci-dir:{i}")))],
        );
        let tar = s.dir.path().join(format!("oci{i}.tar"));
        write_tar(&tar, &oci_files(&[(&image, Some(&format!("oci-tar:{i}")))]));
        let docker = s.dir.path().join(format!("docker{i}.tar"));
        let tag = format!("docker:{i}");
        write_tar(&docker, &docker_files(&[(&image, &[tag.as_str()])], i == 2));
        let r = s.store.import(&dir, None).expect("OCI dir");
        assert_eq!(
            (r[0].digest.as_str(), &r[0].names[..]),
            (image.digest.as_str(), &[format!("oci-dir:{i}")][..])
        );
        let events = std::sync::Mutex::new(Vec::new());
        let r = s
            .store
            .import_reporting(&tar, None, &|e| events.lock().unwrap().push(e))
            .expect("OCI tar");
        assert_eq!(r[0].digest, image.digest);
        // Progress: the archive's size, then reads adding up to at most
        // that (the tar's zero blocks at its end may be left unread), then
        // each layer.
        let events = events.into_inner().unwrap();
        let size = fs::metadata(&tar).unwrap().len();
        assert_eq!(events[0], ImportEvent::Unpacking { size });
        let read: u64 = events
            .iter()
            .map(|e| match e {
                ImportEvent::Read { bytes } => *bytes,
                _ => 0,
            })
            .sum();
        assert!(read > 0 && read <= size, "{read} of {size}");
        let layers: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, ImportEvent::Layer { .. }))
            .collect();
        assert_eq!(
            layers,
            [
                &ImportEvent::Layer { index: 0, count: 2 },
                &ImportEvent::Layer { index: 1, count: 2 }
            ]
        );
        let r = s.store.import(&docker, None).expect("docker-archive");
        // A docker-archive's identity is its config and uncompressed
        // layers: the same for every compression, and the same as the
        // uncompressed OCI image's (its manifest is the one the store builds).
        assert_eq!(r[0].digest, image.docker_digest());
        assert_eq!(
            r[0].digest,
            simple_image("same", Compression::None).build().digest
        );
        assert!(r[0].names.contains(&tag), "{:?}", r[0].names);
        assert_eq!(r[0].chain_ids, image.chain_ids());
        let t = s.store.resolve(&format!("docker:{i}")).unwrap();
        assert_eq!(
            fs::read_to_string(t.layers[1].join("same.txt")).unwrap(),
            "same"
        );
    }
    // The same layers whatever their compression: two snapshots in all.
    let snapshots = names(&s.images_dir().join("snapshots"));
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
    assert!(
        names(&s.images_dir().join("tmp")).is_empty(),
        "unpacked archives are removed"
    );
    let list = s.store.list().unwrap();
    assert_eq!(
        list.len(),
        3,
        "an OCI image per compression, the docker-archives one of them"
    );
    let plain = &list[0];
    assert_eq!(
        plain.names,
        ["oci-dir:0", "oci-tar:0", "docker:0", "docker:1", "docker:2"]
    );
}

#[test]
fn images_sharing_a_base_layer_store_it_once() {
    let s = Store::new();
    let a = simple_image("a", Compression::Gzip).build();
    let b = simple_image("b", Compression::None).build();
    s.store
        .import(&s.oci_dir("a", &[(&a, Some("a:1"))]), None)
        .unwrap();
    s.store
        .import(&s.oci_dir("b", &[(&b, Some("b:1"))]), None)
        .unwrap();
    let (ra, rb) = (
        s.store.resolve("a:1").unwrap(),
        s.store.resolve("b:1").unwrap(),
    );
    assert_eq!(ra.layers[0], rb.layers[0]);
    assert_ne!(ra.layers[1], rb.layers[1]);
    let ino = |r: &host_ctl::image::ResolvedImage| stat(&r.layers[0].join("etc/os-release")).ino();
    assert_eq!(ino(&ra), ino(&rb));
    assert_eq!(names(&s.images_dir().join("snapshots")).len(), 3);
}

#[test]
fn corrupt_layers_are_refused_and_the_store_is_left_as_it_was() {
    let s = Store::new();
    let good = simple_image("good", Compression::Gzip).build();
    s.store
        .import(&s.oci_dir("good", &[(&good, Some("good"))]), None)
        .unwrap();

    let spec = || {
        ImageSpec::new(vec![
            Layer::new(vec![Entry::file("base", "base")]),
            Layer::new(vec![Entry::file("bad", "bad")]).compressed(Compression::Gzip),
        ])
    };
    let wrong = spec().wrong_diff_id(1).build();
    let err = s.import_err(&s.oci_dir("diff", &[(&wrong, Some("bad"))]));
    let real = kvmpod_tests::images::sha256(&wrong.layers[1].tar);
    assert!(
        err.contains("layer 1") && err.contains(&real) && err.contains(&wrong.layers[1].diff_id),
        "{err}"
    );

    let docker = s.dir.path().join("diff-docker.tar");
    write_tar(&docker, &docker_files(&[(&wrong, &["bad:docker"])], false));
    let err = s.import_err(&docker);
    assert!(
        err.contains(&real) && err.contains(&wrong.layers[1].diff_id),
        "{err}"
    );

    let flipped = spec().corrupt_blob(1).build();
    let err = s.import_err(&s.oci_dir("blob", &[(&flipped, Some("bad"))]));
    let actual = kvmpod_tests::images::sha256(&flipped.layers[1].blob);
    assert!(
        err.contains(&flipped.layers[1].digest) && err.contains(&actual),
        "{err}"
    );
    assert_eq!(s.store.list().unwrap().len(), 1);
}

#[test]
fn truncated_archives_are_refused_and_leave_nothing() {
    let s = Store::new();
    let image = simple_image("t", Compression::Zstd).build();
    let tar = s.dir.path().join("t.tar");
    write_tar(&tar, &oci_files(&[(&image, Some("t:1"))]));
    let len = fs::metadata(&tar).unwrap().len();
    truncate(&tar, len - 1024);
    let err = s.import_err(&tar);
    assert!(err.contains("truncated") && err.contains("t.tar"), "{err}");
    write_tar(&tar, &oci_files(&[(&image, Some("t:1"))]));
    truncate(&tar, len / 2 + 100);
    let err = s.import_err(&tar);
    assert!(err.contains("t.tar"), "{err}");
    assert!(names(&s.images_dir().join("tmp")).is_empty());
    assert!(names(&s.images_dir().join("snapshots")).is_empty());
}

#[test]
fn hostile_entries_are_refused() {
    let s = Store::new();
    let outside = s.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let cases: Vec<(Vec<Entry>, &str, &str)> = vec![
        (
            vec![Entry::file("../x", "x")],
            "../x",
            "its path climbs out of the layer",
        ),
        (
            vec![Entry::file("a/../../x", "x")],
            "a/../../x",
            "its path climbs out of the layer",
        ),
        (
            vec![
                Entry::symlink("evil", outside.to_str().unwrap()),
                Entry::file("evil/x", "x"),
            ],
            "evil/x",
            "its parent evil is a symbolic link",
        ),
        (
            vec![Entry::char_device("null", 1, 3)],
            "null",
            "device nodes (1:3) are not allowed",
        ),
        (
            vec![Entry::block_device("sda", 8, 0)],
            "sda",
            "device nodes (8:0) are not allowed",
        ),
        (
            vec![Entry::hardlink("h", "../../etc/passwd")],
            "h",
            "hard link target ../../etc/passwd escapes the layer",
        ),
        (
            vec![Entry::hardlink("h", "/etc/passwd")],
            "h",
            "hard link target /etc/passwd is neither in this layer nor below it",
        ),
        (
            vec![
                Entry::symlink("l", "/etc"),
                Entry::hardlink("h", "l/passwd"),
            ],
            "h",
            "hard link target: its parent l is a symbolic link",
        ),
    ];
    for (i, (entries, entry, reason)) in cases.into_iter().enumerate() {
        let image = ImageSpec::new(vec![Layer::new(entries)]).build();
        let err = s.import_err(&s.oci_dir(&format!("h{i}"), &[(&image, Some("evil"))]));
        let want = format!("entry {entry:?}: {reason}");
        assert!(
            err.contains("refusing layer 0") && err.contains(&want),
            "case {i}: {err}\nwanted: {want}"
        );
        assert!(names(&outside).is_empty(), "case {i} wrote outside");
    }
    // Absolute paths are made relative, fifos are fine.
    let image = ImageSpec::new(vec![Layer::new(vec![
        Entry::file("/abs/file", "ok"),
        Entry::fifo("p"),
    ])])
    .build();
    s.store
        .import(&s.oci_dir("ok", &[(&image, Some("ok:1"))]), None)
        .unwrap();
    let r = s.store.resolve("ok:1").unwrap();
    assert_eq!(
        fs::read_to_string(r.layers[0].join("abs/file")).unwrap(),
        "ok"
    );
}

#[test]
fn rm_is_refused_while_leased_and_allowed_with_force() {
    let s = Store::new();
    let a = simple_image("a", Compression::None).build();
    let b = simple_image("b", Compression::None).build();
    s.store
        .import(&s.oci_dir("a", &[(&a, Some("img-a:1"))]), None)
        .unwrap();
    s.store
        .import(&s.oci_dir("b", &[(&b, Some("img-b:1"))]), None)
        .unwrap();
    s.store
        .lease("pod-1", std::slice::from_ref(&a.digest))
        .unwrap();
    match s.store.remove("img-a:1", false) {
        Err(ImageError::InUse { pods, .. }) => assert_eq!(pods, vec!["pod-1"]),
        other => panic!("{other:?}"),
    }
    let code = image_cmd(
        s.dir.path(),
        ImageCommand::Rm {
            references: vec!["img-a:1".into()],
            force: false,
        },
    )
    .unwrap();
    assert_eq!(code, 1);
    let removed = s.store.remove("img-a:1", true).expect("forced");
    assert_eq!(removed.digest, a.digest);
    let ids = a.chain_ids();
    assert!(
        s.store.snapshot_dir(&ids[0]).is_dir(),
        "the base b shares stays"
    );
    assert!(
        !s.store.snapshot_dir(&ids[1]).exists(),
        "a's own layer goes"
    );
    assert!(!s
        .images_dir()
        .join("blobs/sha256")
        .join(&a.config_digest[7..])
        .exists());
    assert!(matches!(
        s.store.resolve("img-a:1"),
        Err(ImageError::NotFound { .. })
    ));
    s.store
        .lease("pod-2", std::slice::from_ref(&b.digest))
        .unwrap();
    s.store.release("pod-2");
    s.store.remove(&b.digest, false).expect("released");
    assert!(names(&s.images_dir().join("snapshots")).is_empty());
    assert!(names(&s.images_dir().join("blobs/sha256")).is_empty());
}

#[test]
fn prune_removes_unnamed_images_unused_snapshots_and_leftovers() {
    let s = Store::new();
    let named = simple_image("named", Compression::None).build();
    let loose = simple_image("loose", Compression::None).build();
    let leased = simple_image("leased", Compression::None).build();
    s.store
        .import(&s.oci_dir("n", &[(&named, Some("named:1"))]), None)
        .unwrap();
    // A bare tag without --name: an unnamed image.
    let r = s
        .store
        .import(
            &s.oci_dir("l", &[(&loose, Some("latest")), (&leased, None)]),
            None,
        )
        .unwrap();
    assert!(r.iter().all(|r| r.names.is_empty()));
    s.store
        .lease("pod", std::slice::from_ref(&leased.digest))
        .unwrap();
    fs::create_dir_all(s.images_dir().join("tmp/import-99/blobs")).unwrap();
    fs::create_dir(s.images_dir().join("snapshots/abc.partial-99")).unwrap();
    fs::write(
        s.images_dir().join("snapshots/abc.partial-99/f"),
        vec![0u8; 5000],
    )
    .unwrap();

    let report = s.store.prune().unwrap();
    assert_eq!(report.images, vec![loose.digest.clone()]);
    assert_eq!((report.snapshots, report.blobs, report.tmp), (2, 2, 1));
    let loose_layer = loose.layers[1].tar.len() as u64;
    assert!(
        report.bytes_freed >= 5000 + 5,
        "{report:?} (layer tar {loose_layer})"
    );
    let left: Vec<String> = s
        .store
        .list()
        .unwrap()
        .into_iter()
        .map(|r| r.digest)
        .collect();
    assert_eq!(left, vec![named.digest.clone(), leased.digest.clone()]);
    assert!(!s.store.snapshot_dir(&loose.chain_ids()[1]).exists());
    assert!(s.store.snapshot_dir(&named.chain_ids()[1]).is_dir());
    assert!(names(&s.images_dir().join("tmp")).is_empty());
    assert_eq!(s.store.prune().unwrap().snapshots, 0);
}

#[test]
fn resolve_by_name_tag_digest_and_prefix() {
    let s = Store::new();
    let config = Config {
        entrypoint: vec!["/bin/app".into()],
        cmd: vec!["--serve".into()],
        env: vec!["PATH=/bin".into(), "A=1".into()],
        working_dir: Some("/srv".into()),
        user: Some("1000:1000".into()),
        stop_signal: Some("SIGINT".into()),
        exposed_ports: vec!["8080/tcp".into(), "53/udp".into()],
    };
    let image = simple_image("r", Compression::Gzip).config(config).build();
    let src = s.oci_dir("r", &[(&image, Some("1.36"))]);
    let r = s.store.import(&src, Some("busybox")).unwrap();
    assert_eq!(
        r[0].names,
        vec!["busybox:1.36"],
        "--name takes the layout's bare tag"
    );
    s.store.import(&src, Some("localhost:5000/x:1")).unwrap();
    let hex = &image.digest[7..];
    for reference in [
        "busybox:1.36",
        "docker.io/library/busybox:1.36",
        "localhost:5000/x:1",
        &image.digest,
        hex,
        &hex[..8],
        &hex[..4],
    ] {
        let got = s
            .store
            .resolve(reference)
            .unwrap_or_else(|e| panic!("{reference}: {e}"));
        assert_eq!(got.digest, image.digest, "{reference}");
    }
    let got = s.store.resolve("busybox:1.36").unwrap();
    assert_eq!(got.names, vec!["busybox:1.36", "localhost:5000/x:1"]);
    assert_eq!(got.config.entrypoint, vec!["/bin/app"]);
    assert_eq!(got.config.cmd, vec!["--serve"]);
    assert_eq!(got.config.env, vec!["PATH=/bin", "A=1"]);
    assert_eq!(got.config.working_dir.as_deref(), Some("/srv"));
    assert_eq!(got.config.user.as_deref(), Some("1000:1000"));
    assert_eq!(got.config.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(got.config.exposed_ports, vec!["53/udp", "8080/tcp"]);
    let err = s.store.resolve("busybox").unwrap_err().to_string();
    assert!(
        err.contains("\"busybox\"") && err.contains("host-ctl image import"),
        "{err}"
    );
    assert!(
        s.store.resolve(&hex[..3]).is_err(),
        "prefixes need 4 digits"
    );
    assert_eq!(
        image_cmd(
            s.dir.path(),
            ImageCommand::Ls {
                format: Format::Json
            }
        )
        .unwrap(),
        0
    );
    assert_eq!(
        image_cmd(
            s.dir.path(),
            ImageCommand::Inspect {
                reference: hex[..6].into()
            }
        )
        .unwrap(),
        0
    );
}

#[test]
fn a_multi_arch_index_imports_its_linux_amd64_image() {
    let s = Store::new();
    let amd64 = simple_image("amd64", Compression::None).build();
    let arm64 = simple_image("arm64", Compression::None).build();
    let dir = s.dir.path().join("multi");
    write_dir(&dir, &oci_multiarch_files(&amd64, &arm64, "multi:1"));
    let r = s.store.import(&dir, None).unwrap();
    let multi: Vec<_> = r.iter().filter(|r| r.names == ["multi:1"]).collect();
    assert_eq!(multi.len(), 1);
    assert_eq!(multi[0].digest, amd64.digest);
}
