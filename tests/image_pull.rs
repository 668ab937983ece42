//! `image pull` against a real registry (Debian's docker-registry) on
//! 127.0.0.1, filled by skopeo from OCI layouts the harness builds: layers
//! and snapshots as pushed, a multi-arch index resolved to linux/amd64, no
//! second download of an image the store has, and failures (missing tag,
//! 401, unreachable registry, corrupt blob, wrong diff ID, plain HTTP to a
//! remote registry) that leave the store as it was. Runs as root (device
//! nodes for whiteouts); no VM.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use host_ctl::commands::image::{run as image_cmd, ImageCommand};
use host_ctl::image::{Fetched, ImageError, ImageStore, PullEvent, PullOptions, PullReport};
use kvmpod_tests::images::{
    listing, oci_files, oci_multiarch_files, sha256, write_dir, BuiltImage, Compression, Entry,
    ImageSpec, Layer,
};
use tempfile::TempDir;

const REGISTRY: &str = "/usr/bin/docker-registry";
const SKOPEO: &str = "/usr/bin/skopeo";

/// Panics, saying how to get them, unless the registry and skopeo are here.
fn require_tools() {
    let missing: Vec<&str> = [REGISTRY, SKOPEO]
        .into_iter()
        .filter(|p| !Path::new(p).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "image pull test prerequisites missing: {} (Debian packages docker-registry, skopeo); run `make deps` as root",
        missing.join(", ")
    );
}

/// A docker-registry process on 127.0.0.1, killed when dropped.
struct Registry {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Registry {
    /// Starts a registry, with htpasswd auth (so anonymous pulls get 401)
    /// if `auth`, and waits until it answers `GET /v2/`.
    fn start(auth: bool) -> Registry {
        require_tools();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if auth {
            // A missing htpasswd file is provisioned with a random user.
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kvmpod-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).expect("writing the registry config");
        let log = fs::File::create(dir.path().join("log")).expect("creating the registry log");
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {REGISTRY}: {e}"));
        let mut registry = Registry { child, port, dir };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("polling the registry") {
                panic!("the registry exited ({status}): {}", self.log());
            }
            if let Some(status) = http_status(self.port, "/v2/") {
                assert!(matches!(status, 200 | 401), "GET /v2/ answered {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the registry never answered: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Blob downloads the registry has served so far (its access log),
    /// counted once the log has settled.
    fn blob_gets(&self) -> usize {
        std::thread::sleep(Duration::from_millis(500));
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
            .count()
    }

    /// Pushes the image (or, with `all`, every image of the index) that
    /// the layout at `layout` tags `tag` to `repo_tag` in this registry.
    fn push(&self, layout: &Path, tag: &str, repo_tag: &str, all: bool) {
        let mut cmd = Command::new(SKOPEO);
        // Blobs and manifests exactly as built (no recompression), so
        // what is pulled can be compared with them.
        cmd.args([
            "--insecure-policy",
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]);
        if all {
            cmd.arg("--all");
        }
        let out = cmd
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host()))
            .output()
            .unwrap_or_else(|e| panic!("running {SKOPEO}: {e}"));
        assert!(
            out.status.success(),
            "skopeo copy to {repo_tag} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The file the registry keeps a blob in.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("finding a free port")
}

/// The status of `GET path` on 127.0.0.1:port, or None if nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A store in a tempdir.
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

    /// Pulls, collecting the progress reports; each layer's pieces, as
    /// reported, add up to its size, and were announced with it.
    fn pull(&self, reference: &str) -> Result<(PullReport, Vec<Fetched>), ImageError> {
        let seen = Mutex::new(Vec::new());
        let arrived = Mutex::new(std::collections::BTreeMap::<String, (u64, u64)>::new());
        let progress = |e: PullEvent<'_>| match e {
            PullEvent::Started { what, size } => {
                arrived
                    .lock()
                    .expect("progress")
                    .insert(what.to_string(), (size, 0));
            }
            PullEvent::Advanced { what, bytes } => {
                let mut a = arrived.lock().expect("progress");
                let layer = a.get_mut(what).expect("a piece of an announced layer");
                layer.1 += bytes;
            }
            PullEvent::Fetched(f) => seen.lock().expect("progress").push(f.clone()),
        };
        let options = PullOptions {
            insecure: false,
            stop_on_signals: false,
            progress: &progress,
        };
        let report = self.store.pull(reference, &options)?;
        let seen = seen.into_inner().expect("progress");
        let arrived = arrived.into_inner().expect("progress");
        for f in seen.iter().filter(|f| f.what.starts_with("layer")) {
            assert_eq!(arrived.get(&f.what), Some(&(f.size, f.size)), "{f:?}");
        }
        assert_eq!(
            arrived.len(),
            seen.iter().filter(|f| f.what.starts_with("layer")).count()
        );
        Ok((report, seen))
    }

    /// Pulls, expecting an error that leaves the store exactly as it was.
    fn pull_err(&self, reference: &str) -> ImageError {
        let before = listing(&self.images_dir());
        let err = match self.pull(reference) {
            Ok((r, _)) => panic!("pulling {reference} should fail, got {:?}", r.record),
            Err(e) => e,
        };
        assert_eq!(
            listing(&self.images_dir()),
            before,
            "the store changed: {err}"
        );
        assert_eq!(
            fs::read_dir(self.images_dir().join("tmp"))
                .expect("tmp")
                .count(),
            0,
            "tmp/ was left with files: {err}"
        );
        err
    }
}

/// Writes an OCI layout of `image` tagged `tag` under `root`.
fn layout(root: &Path, name: &str, image: &BuiltImage, tag: &str) -> PathBuf {
    let dir = root.join(name);
    write_dir(&dir, &oci_files(&[(image, Some(tag))]));
    dir
}

/// Three layers: gzip, gzip with a whiteout and an opaque directory,
/// uncompressed.
fn test_image() -> BuiltImage {
    ImageSpec::new(vec![
        Layer::new(vec![
            Entry::dir("etc"),
            Entry::file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
            Entry::file("etc/hostname", "pulled\n"),
            Entry::dir("data"),
            Entry::file("data/a", "a"),
        ])
        .compressed(Compression::Gzip),
        Layer::new(vec![
            Entry::whiteout("etc/passwd"),
            Entry::dir("data"),
            Entry::opaque("data"),
            Entry::file("data/b", "bee"),
        ])
        .compressed(Compression::Gzip),
        Layer::new(vec![Entry::file("top", "top layer\n").mode(0o600)]),
    ])
    .build()
}

fn is_whiteout(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

/// The snapshots hold exactly what the three layers of `test_image` say.
fn check_snapshots(store: &ImageStore, image: &BuiltImage) {
    let resolved = store.resolve(&image.digest).expect("resolving by digest");
    let chain = image.chain_ids();
    let expected: Vec<PathBuf> = chain.iter().map(|c| store.snapshot_dir(c)).collect();
    assert_eq!(resolved.layers, expected);
    let [low, mid, top] = &resolved.layers[..] else {
        panic!("{:?}", resolved.layers)
    };
    let read = |p: PathBuf| fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(read(low.join("etc/passwd")), b"root:x:0:0::/root:/bin/sh\n");
    assert_eq!(read(low.join("etc/hostname")), b"pulled\n");
    assert_eq!(read(low.join("data/a")), b"a");
    assert!(is_whiteout(&mid.join("etc/passwd")), "the whiteout");
    assert!(is_whiteout(&mid.join("data/a")), "the opaque directory");
    assert_eq!(read(mid.join("data/b")), b"bee");
    assert_eq!(read(top.join("top")), b"top layer\n");
    let mode = fs::metadata(top.join("top")).expect("stat").mode();
    assert_eq!(mode & 0o7777, 0o600);
}

#[test]
fn pulls_layers_as_pushed_and_never_downloads_twice() {
    let registry = Registry::start(false);
    let s = Store::new();
    let image = test_image();
    let src = layout(s.dir.path(), "src", &image, "latest");
    registry.push(&src, "latest", "kvmpod/test:1", false);
    let name = format!("{}/kvmpod/test:1", registry.host());

    let (report, fetched) = s.pull(&name).expect("pull");
    assert_eq!(report.record.digest, image.digest, "the manifest as pushed");
    assert_eq!(report.record.names, vec![name.clone()]);
    assert_eq!(report.record.chain_ids, image.chain_ids());
    assert_eq!(report.record.config_digest, image.config_digest);
    assert_eq!(report.blobs, 4, "config and three layers");
    let mut digests: Vec<String> = fetched.iter().map(|f| f.digest.clone()).collect();
    digests.sort();
    let mut pushed: Vec<String> = image.layers.iter().map(|l| l.digest.clone()).collect();
    pushed.push(image.config_digest.clone());
    pushed.sort();
    assert_eq!(digests, pushed, "a progress report per blob");
    let sizes: u64 = image.layers.iter().map(|l| l.blob.len() as u64).sum();
    assert_eq!(report.bytes, sizes + image.config.len() as u64);
    let listed = s.store.list().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].names, vec![name.clone()]);
    check_snapshots(&s.store, &image);
    assert_eq!(
        fs::read_dir(s.images_dir().join("tmp"))
            .expect("tmp")
            .count(),
        0
    );

    let gets = registry.blob_gets();
    assert!(
        gets >= 4,
        "the first pull downloaded the blobs ({gets} GETs)"
    );
    let before = listing(&s.images_dir());
    let (again, fetched) = s.pull(&name).expect("second pull");
    assert_eq!((again.blobs, fetched.len()), (0, 0));
    assert_eq!(again.record, report.record);
    let by_digest = format!("{}/kvmpod/test@{}", registry.host(), image.digest);
    let (third, _) = s.pull(&by_digest).expect("pull by digest");
    assert_eq!((third.blobs, &third.record), (0, &report.record));
    assert_eq!(registry.blob_gets(), gets, "no blob downloaded again");
    assert_eq!(listing(&s.images_dir()), before, "the store is unchanged");

    // Through the command, as the CLI runs it.
    let cmd = ImageCommand::Pull {
        reference: name,
        insecure: false,
    };
    assert_eq!(image_cmd(s.dir.path(), cmd).expect("image pull"), 0);
}

#[test]
fn a_new_tag_of_a_stored_image_moves_the_name_without_downloading() {
    let registry = Registry::start(false);
    let s = Store::new();
    let image = test_image();
    let other = ImageSpec::new(vec![Layer::new(vec![Entry::file("other", "o")])]).build();
    let src = layout(s.dir.path(), "src", &image, "latest");
    let src2 = layout(s.dir.path(), "src2", &other, "latest");
    registry.push(&src, "latest", "kvmpod/test:1", false);
    registry.push(&src, "latest", "kvmpod/test:2", false);
    registry.push(&src2, "latest", "kvmpod/other:1", false);
    let host = registry.host();
    s.pull(&format!("{host}/kvmpod/other:1"))
        .expect("pull other");
    s.pull(&format!("{host}/kvmpod/test:1"))
        .expect("pull test:1");
    let gets = registry.blob_gets();
    let (report, _) = s
        .pull(&format!("{host}/kvmpod/test:2"))
        .expect("pull test:2");
    assert_eq!(report.blobs, 0);
    assert_eq!(
        report.record.names,
        vec![
            format!("{host}/kvmpod/test:1"),
            format!("{host}/kvmpod/test:2")
        ]
    );
    assert_eq!(registry.blob_gets(), gets);
    let listed = s.store.list().expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].names, vec![format!("{host}/kvmpod/other:1")]);
}

/// An OCI layout whose index.json names a multi-arch index of `images`
/// with the given architectures, tagged `tag`.
fn index_layout(root: &Path, name: &str, images: &[(&BuiltImage, &str)], tag: &str) -> PathBuf {
    let dir = root.join(name);
    let mut files = oci_files(&images.iter().map(|(i, _)| (*i, None)).collect::<Vec<_>>());
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": images.iter().map(|(i, arch)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": i.digest,
            "size": i.manifest.len(),
            "platform": {"architecture": arch, "os": "linux"},
        })).collect::<Vec<_>>(),
    }))
    .expect("index");
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": sha256(&list),
        "size": list.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }]});
    files.retain(|(p, _)| p != "index.json");
    files.push((
        "index.json".into(),
        serde_json::to_vec(&index).expect("index"),
    ));
    files.push((format!("blobs/sha256/{}", &sha256(&list)[7..]), list));
    write_dir(&dir, &files);
    dir
}

fn arch_image(arch: &str) -> BuiltImage {
    ImageSpec::new(vec![
        Layer::new(vec![Entry::file("arch", arch)]).compressed(Compression::Gzip)
    ])
    .build()
}

#[test]
fn multi_arch_indexes_resolve_to_linux_amd64() {
    let registry = Registry::start(false);
    let s = Store::new();
    let (amd64, arm64, s390x) = (
        arch_image("amd64"),
        arch_image("arm64"),
        arch_image("s390x"),
    );
    let src = s.dir.path().join("multi");
    write_dir(&src, &oci_multiarch_files(&amd64, &arm64, "multi"));
    registry.push(&src, "multi", "kvmpod/multi:1", true);
    let name = format!("{}/kvmpod/multi:1", registry.host());
    let (report, fetched) = s.pull(&name).expect("pull multi-arch");
    assert_eq!(report.record.digest, amd64.digest);
    assert_eq!(report.record.names, vec![name]);
    assert!(fetched.iter().all(|f| f.digest != arm64.layers[0].digest));
    let resolved = s.store.resolve(&amd64.digest).expect("resolve");
    assert_eq!(
        fs::read(resolved.layers[0].join("arch")).expect("arch"),
        b"amd64"
    );

    let other = index_layout(
        s.dir.path(),
        "other",
        &[(&arm64, "arm64"), (&s390x, "s390x")],
        "x",
    );
    registry.push(&other, "x", "kvmpod/noamd64:1", true);
    let err = s
        .pull_err(&format!("{}/kvmpod/noamd64:1", registry.host()))
        .to_string();
    assert!(err.contains("kvmpod/noamd64:1"), "{err}");
    assert!(err.contains("no linux/amd64 image"), "{err}");
    assert!(err.contains("linux/arm64, linux/s390x"), "{err}");
}

#[test]
fn missing_tags_and_refusals_are_clear_and_change_nothing() {
    let registry = Registry::start(false);
    let s = Store::new();
    let image = test_image();
    let src = layout(s.dir.path(), "src", &image, "latest");
    registry.push(&src, "latest", "kvmpod/test:1", false);
    s.pull(&format!("{}/kvmpod/test:1", registry.host()))
        .expect("pull");

    let missing = format!("{}/kvmpod/test:nope", registry.host());
    let err = s.pull_err(&missing).to_string();
    assert!(err.contains(&missing), "{err}");
    assert!(err.contains("404 Not Found"), "{err}");
    assert!(err.contains("MANIFEST_UNKNOWN"), "{err}");
    let err = s
        .pull_err(&format!("{}/kvmpod/nothing:1", registry.host()))
        .to_string();
    assert!(err.contains("404 Not Found"), "{err}");

    let closed = format!("127.0.0.1:{}/kvmpod/test:1", free_port());
    let err = s.pull_err(&closed).to_string();
    assert!(
        err.contains(&closed) && err.contains("unreachable"),
        "{err}"
    );

    // Refused before any connection: the name does not even resolve.
    let started = Instant::now();
    let remote = "http://registry.invalid:5000/kvmpod/test:1";
    match s.pull_err(remote) {
        ImageError::Insecure {
            reference,
            registry,
        } => assert_eq!(
            (reference.as_str(), registry.as_str()),
            (remote, "registry.invalid:5000")
        ),
        other => panic!("{other}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    let err = s.pull_err("kvmpod/Test:1").to_string();
    assert!(err.contains("invalid image reference"), "{err}");
}

#[test]
fn registries_that_want_credentials_answer_401() {
    let registry = Registry::start(true);
    let s = Store::new();
    let reference = format!("{}/kvmpod/test:1", registry.host());
    let err = s.pull_err(&reference).to_string();
    assert!(err.contains(&reference), "{err}");
    assert!(err.contains("401 Unauthorized"), "{err}");
}

#[test]
fn corrupt_blobs_and_wrong_diff_ids_leave_the_store_as_it_was() {
    let registry = Registry::start(false);
    let s = Store::new();
    let image = test_image();
    let src = layout(s.dir.path(), "src", &image, "latest");
    registry.push(&src, "latest", "kvmpod/test:1", false);
    // The registry checks digests on push, not on serving: spoil its copy
    // of the top layer (same size, other content).
    let blob = registry.blob_file(&image.layers[2].digest);
    let mut bytes = fs::read(&blob).expect("reading the registry's blob");
    bytes[10] ^= 0x55;
    fs::write(&blob, &bytes).expect("spoiling the blob");
    let err = s
        .pull_err(&format!("{}/kvmpod/test:1", registry.host()))
        .to_string();
    assert!(err.contains(&image.layers[2].digest), "{err}");
    assert!(s.store.list().expect("list").is_empty());

    // Blobs that are what they say, but a config that lies about a layer:
    // the store's import refuses it, after the download.
    let liar = ImageSpec::new(vec![
        Layer::new(vec![Entry::file("a", "a")]).compressed(Compression::Gzip),
        Layer::new(vec![Entry::file("b", "b")]),
    ])
    .wrong_diff_id(1)
    .build();
    let src = layout(s.dir.path(), "liar", &liar, "latest");
    registry.push(&src, "latest", "kvmpod/liar:1", false);
    let err = s.pull_err(&format!("{}/kvmpod/liar:1", registry.host()));
    assert!(matches!(err, ImageError::DiffIdMismatch { .. }), "{err}");
    assert!(s.store.list().expect("list").is_empty());
    let snapshots = fs::read_dir(s.images_dir().join("snapshots")).expect("snapshots");
    assert_eq!(snapshots.count(), 0, "no snapshot left");
}
