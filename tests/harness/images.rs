//! Builds OCI images for tests: layers from lists of entries (or from a
//! host directory, such as a busybox root), written as an OCI image layout
//! (a directory or a tar) or a docker-archive, with uncompressed, gzip or
//! zstd layers. It can also spoil them (a flipped byte, a wrong diff ID, a
//! truncated archive) and write hostile entries the `tar` crate refuses.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A fixed mtime, so that the same entries make the same tar.
pub const MTIME: u64 = 1_700_000_000;

/// `sha256:<hex>` of some bytes.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The OCI chain IDs of diff IDs, bottom first.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => sha256(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    Hardlink(String),
    Fifo,
    Device { block: bool, major: u32, minor: u32 },
}

/// One layer entry; the path is written as given (even `../x`).
#[derive(Debug, Clone)]
pub struct Entry {
    path: String,
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Entry {
    fn new(path: &str, kind: Kind, mode: u32) -> Entry {
        Entry {
            path: path.to_string(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: MTIME,
            xattrs: Vec::new(),
        }
    }

    pub fn dir(path: &str) -> Entry {
        Entry::new(path, Kind::Dir, 0o755)
    }

    pub fn file(path: &str, content: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, Kind::File(content.as_ref().to_vec()), 0o644)
    }

    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry::new(path, Kind::Symlink(target.to_string()), 0o777)
    }

    /// A hard link at `path` to the file at `target` (a path in the layer).
    pub fn hardlink(path: &str, target: &str) -> Entry {
        Entry::new(path, Kind::Hardlink(target.to_string()), 0o644)
    }

    /// Deletes `path` of the lower layers: an empty file `.wh.<name>`.
    pub fn whiteout(path: &str) -> Entry {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        Entry::file(&format!("{dir}.wh.{name}"), b"")
    }

    /// Hides the lower layers' content of `dir`: `dir/.wh..wh..opq`.
    pub fn opaque(dir: &str) -> Entry {
        Entry::file(&format!("{}/.wh..wh..opq", dir.trim_end_matches('/')), b"")
    }

    pub fn fifo(path: &str) -> Entry {
        Entry::new(path, Kind::Fifo, 0o644)
    }

    pub fn char_device(path: &str, major: u32, minor: u32) -> Entry {
        Entry::new(
            path,
            Kind::Device {
                block: false,
                major,
                minor,
            },
            0o600,
        )
    }

    pub fn block_device(path: &str, major: u32, minor: u32) -> Entry {
        Entry::new(
            path,
            Kind::Device {
                block: true,
                major,
                minor,
            },
            0o600,
        )
    }

    pub fn mode(mut self, mode: u32) -> Entry {
        self.mode = mode;
        self
    }

    pub fn owner(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }

    pub fn mtime(mut self, mtime: u64) -> Entry {
        self.mtime = mtime;
        self
    }

    /// An xattr, written as a PAX `SCHILY.xattr.<name>` record.
    pub fn xattr(mut self, name: &str, value: impl AsRef<[u8]>) -> Entry {
        self.xattrs
            .push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    fn header(&self) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        let (kind, size) = match &self.kind {
            Kind::Dir => (tar::EntryType::Directory, 0),
            Kind::File(c) => (tar::EntryType::Regular, c.len() as u64),
            Kind::Symlink(_) => (tar::EntryType::Symlink, 0),
            Kind::Hardlink(_) => (tar::EntryType::Link, 0),
            Kind::Fifo => (tar::EntryType::Fifo, 0),
            Kind::Device { block: true, .. } => (tar::EntryType::Block, 0),
            Kind::Device { .. } => (tar::EntryType::Char, 0),
        };
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(self.mode);
        h.set_uid(self.uid);
        h.set_gid(self.gid);
        h.set_mtime(self.mtime);
        if let Kind::Device { major, minor, .. } = self.kind {
            h.set_device_major(major).expect("device major");
            h.set_device_minor(minor).expect("device minor");
        }
        h
    }

    fn append(&self, b: &mut tar::Builder<Vec<u8>>) -> io::Result<()> {
        if !self.xattrs.is_empty() {
            let records: Vec<(String, Vec<u8>)> = self
                .xattrs
                .iter()
                .map(|(n, v)| (format!("SCHILY.xattr.{n}"), v.clone()))
                .collect();
            let data = pax_records(&records);
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_path("PaxHeaders/entry")?;
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, &data[..])?;
        }
        let mut h = self.header();
        let data: &[u8] = match &self.kind {
            Kind::File(c) => c,
            _ => &[],
        };
        let link = match &self.kind {
            Kind::Symlink(t) | Kind::Hardlink(t) => Some(t.as_str()),
            _ => None,
        };
        // The tar crate refuses `..` and absolute paths: write those raw.
        let raw = self.path.starts_with('/') || self.path.split('/').any(|c| c == "..");
        if raw {
            let name = &mut h.as_old_mut().name;
            name[..self.path.len()].copy_from_slice(self.path.as_bytes());
            if let Some(l) = link {
                h.set_link_name_literal(l)?;
            }
            h.set_cksum();
            return b.append(&h, data);
        }
        match link {
            Some(l) => b.append_link(&mut h, &self.path, l),
            None => b.append_data(&mut h, &self.path, data),
        }
    }
}

/// PAX extended header records: `<len> <key>=<value>\n`, where len counts
/// the whole record, its own digits included.
fn pax_records(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {key}=").as_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// A layer: entries in archive order.
#[derive(Debug, Clone)]
pub struct Layer {
    pub entries: Vec<Entry>,
    pub compression: Compression,
}

impl Layer {
    pub fn new(entries: Vec<Entry>) -> Layer {
        Layer {
            entries,
            compression: Compression::None,
        }
    }

    pub fn compressed(mut self, c: Compression) -> Layer {
        self.compression = c;
        self
    }

    /// The layer of a host directory (a busybox root, say): directories,
    /// files, symlinks, fifos and hard links (by inode), sorted, with their
    /// modes, owners and mtimes; sockets and devices are left out.
    pub fn from_dir(root: &Path) -> io::Result<Layer> {
        let mut entries = Vec::new();
        let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
        walk(root, Path::new(""), &mut entries, &mut inodes)?;
        Ok(Layer::new(entries))
    }

    /// The uncompressed tar.
    pub fn tar(&self) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in &self.entries {
            e.append(&mut b)
                .unwrap_or_else(|err| panic!("writing entry {}: {err}", e.path));
        }
        b.into_inner().expect("finishing a layer tar")
    }
}

fn walk(
    root: &Path,
    rel: &Path,
    out: &mut Vec<Entry>,
    inodes: &mut HashMap<(u64, u64), String>,
) -> io::Result<()> {
    let mut children: Vec<_> = fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    children.sort_by_key(|c| c.file_name());
    for child in children {
        let rel = rel.join(child.file_name());
        let path = root.join(&rel);
        let name = rel.to_str().expect("UTF-8 paths").to_string();
        let m = fs::symlink_metadata(&path)?;
        let ft = m.file_type();
        let entry = if ft.is_dir() {
            Entry::dir(&name)
        } else if ft.is_symlink() {
            Entry::symlink(&name, fs::read_link(&path)?.to_str().expect("UTF-8 link"))
        } else if ft.is_file() {
            if let Some(first) = m
                .nlink()
                .gt(&1)
                .then(|| inodes.get(&(m.dev(), m.ino())))
                .flatten()
            {
                Entry::hardlink(&name, first)
            } else {
                inodes.insert((m.dev(), m.ino()), name.clone());
                Entry::file(&name, fs::read(&path)?)
            }
        } else if ft.is_fifo() {
            Entry::fifo(&name)
        } else {
            continue;
        };
        let mode = if ft.is_symlink() {
            0o777
        } else {
            m.mode() & 0o7777
        };
        out.push(
            entry
                .mode(mode)
                .owner(m.uid().into(), m.gid().into())
                .mtime(m.mtime().max(0) as u64),
        );
        if ft.is_dir() {
            walk(root, &rel, out, inodes)?;
        }
    }
    Ok(())
}

/// What an image's config says about running it.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub stop_signal: Option<String>,
    pub exposed_ports: Vec<String>,
}

/// An image to build.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub layers: Vec<Layer>,
    pub config: Config,
    /// Layers whose config diff ID is not their content's.
    wrong_diff_id: Vec<usize>,
    /// Layers whose blob gets a byte flipped after its digest was taken.
    corrupt_blob: Vec<usize>,
}

impl ImageSpec {
    pub fn new(layers: Vec<Layer>) -> ImageSpec {
        ImageSpec {
            layers,
            config: Config::default(),
            wrong_diff_id: Vec::new(),
            corrupt_blob: Vec::new(),
        }
    }

    pub fn config(mut self, config: Config) -> ImageSpec {
        self.config = config;
        self
    }

    pub fn wrong_diff_id(mut self, layer: usize) -> ImageSpec {
        self.wrong_diff_id.push(layer);
        self
    }

    pub fn corrupt_blob(mut self, layer: usize) -> ImageSpec {
        self.corrupt_blob.push(layer);
        self
    }

    pub fn build(&self) -> BuiltImage {
        let mut layers = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let tar = layer.tar();
            let real_diff = sha256(&tar);
            let diff_id = if self.wrong_diff_id.contains(&i) {
                sha256(format!("not layer {i}").as_bytes())
            } else {
                real_diff
            };
            let (mut blob, media_type) = compress(&tar, layer.compression);
            let digest = sha256(&blob);
            if self.corrupt_blob.contains(&i) {
                let at = blob.len() / 2;
                blob[at] ^= 0x55;
            }
            layers.push(BuiltLayer {
                tar,
                blob,
                diff_id,
                digest,
                media_type,
            });
        }
        let config = config_json(&self.config, &layers);
        let config_digest = sha256(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": l.media_type,
                "digest": l.digest,
                "size": l.blob.len(),
            })).collect::<Vec<_>>(),
        }))
        .expect("serialising a manifest");
        BuiltImage {
            digest: sha256(&manifest),
            manifest,
            config,
            config_digest,
            layers,
        }
    }
}

fn compress(tar: &[u8], c: Compression) -> (Vec<u8>, String) {
    let base = "application/vnd.oci.image.layer.v1.tar";
    match c {
        Compression::None => (tar.to_vec(), base.to_string()),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).expect("gzip");
            (e.finish().expect("gzip"), format!("{base}+gzip"))
        }
        Compression::Zstd => (
            zstd::encode_all(tar, 3).expect("zstd"),
            format!("{base}+zstd"),
        ),
    }
}

fn config_json(c: &Config, layers: &[BuiltLayer]) -> Vec<u8> {
    let ports: BTreeMap<&str, serde_json::Value> = c
        .exposed_ports
        .iter()
        .map(|p| (p.as_str(), serde_json::json!({})))
        .collect();
    let mut cfg = serde_json::json!({
        "Entrypoint": c.entrypoint,
        "Cmd": c.cmd,
        "Env": c.env,
        "ExposedPorts": ports,
    });
    for (key, value) in [
        ("WorkingDir", &c.working_dir),
        ("User", &c.user),
        ("StopSignal", &c.stop_signal),
    ] {
        if let Some(v) = value {
            cfg[key] = serde_json::json!(v);
        }
    }
    serde_json::to_vec(&serde_json::json!({
        "created": "2024-01-02T03:04:05Z",
        "architecture": "amd64",
        "os": "linux",
        "config": cfg,
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>(),
        },
    }))
    .expect("serialising a config")
}

/// A built layer: its tar, its blob as stored (maybe compressed, maybe
/// spoiled) and their digests.
#[derive(Debug, Clone)]
pub struct BuiltLayer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    /// As the config says.
    pub diff_id: String,
    /// As the manifest says.
    pub digest: String,
    pub media_type: String,
}

#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The manifest's digest: the image's identity in an OCI layout.
    pub digest: String,
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layers: Vec<BuiltLayer>,
}

impl BuiltImage {
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }

    pub fn chain_ids(&self) -> Vec<String> {
        chain_ids(&self.diff_ids())
    }

    /// The manifest digest a docker-archive of this image imports as: that
    /// of the OCI manifest of its config and uncompressed layers (as the
    /// store builds it).
    pub fn docker_digest(&self) -> String {
        let layers: Vec<serde_json::Value> = self
            .layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": l.diff_id,
                    "size": l.tar.len(),
                })
            })
            .collect();
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": self.config_digest,
                "size": self.config.len(),
            },
            "layers": layers,
        });
        sha256(m.to_string().as_bytes())
    }
}

/// Files of an archive, by path.
pub type Files = Vec<(String, Vec<u8>)>;

fn blob_name(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// An OCI image layout's files; each image with an optional
/// `org.opencontainers.image.ref.name` (a bare tag or a full reference).
pub fn oci_files(images: &[(&BuiltImage, Option<&str>)]) -> Files {
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut manifests = Vec::new();
    for (image, name) in images {
        blobs.insert(blob_name(&image.digest), image.manifest.clone());
        blobs.insert(blob_name(&image.config_digest), image.config.clone());
        for l in &image.layers {
            blobs.insert(blob_name(&l.digest), l.blob.clone());
        }
        let mut desc = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": image.digest,
            "size": image.manifest.len(),
        });
        if let Some(n) = name {
            desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": n});
        }
        manifests.push(desc);
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
    let mut files = vec![
        (
            "oci-layout".to_string(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        (
            "index.json".to_string(),
            serde_json::to_vec(&index).expect("index"),
        ),
    ];
    files.extend(blobs);
    files
}

/// An OCI layout whose index.json names one multi-arch index: `amd64` as
/// linux/amd64 and `other` as linux/arm64.
pub fn oci_multiarch_files(amd64: &BuiltImage, other: &BuiltImage, name: &str) -> Files {
    let mut files = oci_files(&[(amd64, None), (other, None)]);
    let desc = |i: &BuiltImage, arch: &str| {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": i.digest,
            "size": i.manifest.len(),
            "platform": {"architecture": arch, "os": "linux"},
        })
    };
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [desc(other, "arm64"), desc(amd64, "amd64")],
    }))
    .expect("index");
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": sha256(&list),
        "size": list.len(),
        "annotations": {"org.opencontainers.image.ref.name": name},
    }]});
    files.retain(|(p, _)| p != "index.json");
    files.push((
        "index.json".into(),
        serde_json::to_vec(&index).expect("index"),
    ));
    files.push((blob_name(&sha256(&list)), list));
    files
}

/// A docker-archive's files (`docker save`): `<id>/layer.tar` layers, or
/// `blobs/sha256/<hex>` ones with `blobs` (as Docker 25 writes them).
pub fn docker_files(images: &[(&BuiltImage, &[&str])], blobs: bool) -> Files {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut manifest = Vec::new();
    for (image, tags) in images {
        let config_name = if blobs {
            blob_name(&image.config_digest)
        } else {
            format!("{}.json", image.config_digest.trim_start_matches("sha256:"))
        };
        files.insert(config_name.clone(), image.config.clone());
        let mut layer_names = Vec::new();
        for l in &image.layers {
            let name = if blobs {
                blob_name(&l.digest)
            } else {
                format!("{}/layer.tar", l.diff_id.trim_start_matches("sha256:"))
            };
            files.insert(name.clone(), l.blob.clone());
            layer_names.push(name);
        }
        manifest.push(serde_json::json!({
            "Config": config_name,
            "RepoTags": tags,
            "Layers": layer_names,
        }));
    }
    let mut out: Files = vec![(
        "manifest.json".into(),
        serde_json::to_vec(&manifest).expect("manifest"),
    )];
    out.extend(files);
    out
}

/// Writes files under `dir`.
pub fn write_dir(dir: &Path, files: &Files) {
    for (name, bytes) in files {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().expect("a parent")).expect("creating a directory");
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

/// Writes files as a tar (directories implied by the paths are added).
pub fn write_tar(path: &Path, files: &Files) {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    for (name, bytes) in files {
        let mut prefix = String::new();
        for part in name
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .expect("a name")
            .1
        {
            prefix.push_str(part);
            prefix.push('/');
            if !dirs.contains(&prefix) {
                dirs.push(prefix.clone());
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                h.set_mtime(MTIME);
                b.append_data(&mut h, &prefix, io::empty()).expect("dir");
            }
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(MTIME);
        b.append_data(&mut h, name, &bytes[..]).expect("file");
    }
    fs::write(path, b.into_inner().expect("tar")).expect("writing a tar");
}

/// Cuts a file down to its first `len` bytes.
pub fn truncate(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .unwrap_or_else(|e| panic!("truncating {}: {e}", path.display()));
}

/// A listing of a tree to compare before and after: path, type, mode,
/// owner, size and content digest (directories' mtimes left out).
pub fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    list_into(root, Path::new(""), &mut out);
    out
}

fn list_into(root: &Path, rel: &Path, out: &mut Vec<String>) {
    let Ok(rd) = fs::read_dir(root.join(rel)) else {
        return;
    };
    let mut names: Vec<PathBuf> = rd
        .map(|e| rel.join(e.expect("entry").file_name()))
        .collect();
    names.sort();
    for rel in names {
        let path = root.join(&rel);
        let m = fs::symlink_metadata(&path).expect("lstat");
        let content = if m.is_file() {
            sha256(&fs::read(&path).expect("read"))
        } else if m.file_type().is_symlink() {
            fs::read_link(&path)
                .expect("readlink")
                .display()
                .to_string()
        } else {
            String::new()
        };
        out.push(format!(
            "{} {:o} {}:{} {} {}",
            rel.display(),
            m.mode(),
            m.uid(),
            m.gid(),
            if m.is_dir() { 0 } else { m.len() },
            content
        ));
        if m.is_dir() {
            list_into(root, &rel, out);
        }
    }
}

/// A docker-archive directory at `dir` whose layers are host directories
/// (bottom first), archived by the system's `tar` and hashed by
/// `sha256sum`: fast enough for layers of gigabytes, which the in-memory
/// builders above are not. `config` is the image config's `config` object.
pub fn docker_dir_from_roots(dir: &Path, roots: &[&Path], config: serde_json::Value, tag: &str) {
    fs::create_dir_all(dir).expect("creating the archive directory");
    let mut names = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, root) in roots.iter().enumerate() {
        let name = format!("layer{i}.tar");
        let tar = dir.join(&name);
        // --sparse: a layer of a large sparse file stays small, as
        // images built with sparse files are.
        let st = std::process::Command::new("tar")
            .args(["--numeric-owner", "--sparse", "-C"])
            .arg(root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("running tar");
        assert!(st.success(), "tar of {} failed", root.display());
        let sum = std::process::Command::new("sha256sum")
            .arg(&tar)
            .output()
            .expect("running sha256sum");
        let text = String::from_utf8_lossy(&sum.stdout);
        let hex = text.split(' ').next().unwrap_or_default();
        diff_ids.push(format!("sha256:{hex}"));
        names.push(name);
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    fs::write(
        dir.join("config.json"),
        serde_json::to_vec(&config).expect("json"),
    )
    .expect("writing config.json");
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": [tag],
        "Layers": names,
    }]);
    fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).expect("json"),
    )
    .expect("writing manifest.json");
}

/// The boot tests' image, as a docker-archive (`docker save`) at `archive`
/// tagged `tag`: a busybox base layer (from `busybox_root`), then a layer
/// that adds `/data/{old,sub/deep}`, `/gone` and `/etc/motd` ("from the
/// image"), then one with a whiteout of `/gone`, an opaque `/data` holding
/// `new` (mode 0604), a hard link `link` to it and a symlink `sym` to it.
/// Its config runs `/bin/sh -c` with a default command printing `cmd
/// $GREETING $(pwd) $(id -u)`, `GREETING=hello`, WorkingDir `/data` and
/// User 65534.
/// A Kubernetes pod's sandbox image (its pause container), from the busybox
/// root: it waits until it is asked to stop.
pub fn write_pause_image(busybox_root: &Path, archive: &Path, tag: &str) {
    let base = Layer::from_dir(busybox_root).expect("a busybox layer");
    let image = ImageSpec::new(vec![base])
        .config(Config {
            entrypoint: vec![
                "/bin/sh".into(),
                "-c".into(),
                "trap 'exit 0' TERM INT; while :; do sleep 1; done".into(),
            ],
            ..Config::default()
        })
        .build();
    write_tar(archive, &docker_files(&[(&image, &[tag])], false));
}

pub fn write_test_image(busybox_root: &Path, archive: &Path, tag: &str) {
    let base = Layer::from_dir(busybox_root).expect("a busybox layer");
    let adds = Layer::new(vec![
        Entry::dir("data"),
        Entry::file("data/old", "old\n"),
        Entry::dir("data/sub"),
        Entry::file("data/sub/deep", "deep\n"),
        Entry::file("gone", "gone\n"),
        Entry::file("etc/motd", "from the image\n"),
    ]);
    let changes = Layer::new(vec![
        Entry::whiteout("gone"),
        Entry::opaque("data"),
        Entry::file("data/new", "new\n").mode(0o604),
        Entry::hardlink("data/link", "data/new"),
        Entry::symlink("data/sym", "new"),
    ]);
    let image = ImageSpec::new(vec![base, adds, changes])
        .config(Config {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo \"cmd $GREETING $(pwd) $(id -u)\"".into()],
            env: vec!["GREETING=hello".into(), "PATH=/bin:/sbin:/usr/bin".into()],
            working_dir: Some("/data".into()),
            user: Some("65534".into()),
            ..Config::default()
        })
        .build();
    write_tar(archive, &docker_files(&[(&image, &[tag])], false));
}
