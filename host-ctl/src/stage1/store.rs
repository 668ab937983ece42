//! The stage1 images under `<state>/stage1/`: built when missing, found by
//! what they were built from, listed, and picked by digest or file.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use rootfs_builder::{build_archive, write_initramfs, Compression, InitramfsSpec, KernelModules};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Stage1Error;

/// What a stage1 image is, kept beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stage1 {
    /// `kvmpod-stage1`.
    pub name: String,
    /// host-ctl's version when it was built.
    pub version: String,
    /// `sha256:<hex>` of the image file.
    pub digest: String,
    /// The kernel release its modules are for.
    pub kernel: String,
    /// `sha256:<hex>` of the agent binary in it.
    pub agent: String,
    pub gzip: bool,
    pub size: u64,
    /// Seconds since the epoch.
    pub created: u64,
    /// Where the image is (not stored: it is found beside the record).
    #[serde(skip)]
    pub path: PathBuf,
}

const NAME: &str = "kvmpod-stage1";

/// The stage1 images of a state directory.
pub struct Stage1Store {
    dir: PathBuf,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Stage1Error {
    let path = path.to_path_buf();
    move |source| Stage1Error::Io { what, path, source }
}

/// `sha256:<hex>` of a file's bytes, read in large blocks.
fn file_digest(path: &Path) -> Result<String, Stage1Error> {
    let mut f = fs::File::open(path).map_err(io("reading", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io("reading", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

impl Stage1Store {
    pub fn new(state_dir: &Path) -> Self {
        Stage1Store {
            dir: state_dir.join("stage1"),
        }
    }

    /// Every image, newest first.
    pub fn list(&self) -> Result<Vec<Stage1>, Stage1Error> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("reading", &self.dir)(e)),
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                let text = fs::read(&p).map_err(io("reading", &p))?;
                let mut s: Stage1 =
                    serde_json::from_slice(&text).map_err(|source| Stage1Error::BadRecord {
                        path: p.clone(),
                        source,
                    })?;
                s.path = p.with_extension("img");
                if s.path.is_file() {
                    out.push(s);
                }
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.digest.cmp(&b.digest)));
        Ok(out)
    }

    /// The image for this agent, kernel modules and compression: found if
    /// it was built before, else built now (`write`) or only described
    /// (`host-ctl args`, which creates nothing).
    pub fn ensure(
        &self,
        agent: &Path,
        modules: Option<&Path>,
        gzip: bool,
        write: bool,
    ) -> Result<Stage1, Stage1Error> {
        let agent_digest = file_digest(agent)?;
        let kernel = kernel_of(modules);
        if let Some(found) = self
            .list()?
            .into_iter()
            .find(|s| s.agent == agent_digest && s.kernel == kernel && s.gzip == gzip)
        {
            return Ok(found);
        }
        let spec = InitramfsSpec {
            agent: agent.to_path_buf(),
            modules: modules.map(|dir| KernelModules {
                dir: dir.to_path_buf(),
                wanted: rootfs_builder::initramfs::pod_modules(),
            }),
        };
        let archive = build_archive(&spec).map_err(|e| Stage1Error::Build(Box::new(e)))?;
        let compression = if gzip {
            Compression::Gzip
        } else {
            Compression::None
        };
        let mut s = Stage1 {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            digest: String::new(),
            kernel,
            agent: agent_digest,
            gzip,
            size: 0,
            created: now(),
            path: PathBuf::new(),
        };
        if !write {
            s.path = self.dir.join("<built by host-ctl run>.img");
            return Ok(s);
        }
        fs::create_dir_all(&self.dir).map_err(io("creating", &self.dir))?;
        let tmp = self
            .dir
            .join(format!(".building-{}.img", std::process::id()));
        let built = write_initramfs(&archive, &tmp, compression)
            .map_err(|e| Stage1Error::Build(Box::new(e)))
            .and_then(|size| Ok((size, file_digest(&tmp)?)));
        let (size, digest) = match built {
            Ok(b) => b,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        s.size = size;
        s.path = self.dir.join(format!("{}.img", hex_of(&digest)));
        s.digest = digest;
        self.commit(&tmp, &s)?;
        Ok(s)
    }

    /// Moves a built image into place and writes its record after it, so
    /// a record always has its image.
    fn commit(&self, tmp: &Path, s: &Stage1) -> Result<(), Stage1Error> {
        fs::rename(tmp, &s.path).map_err(io("writing", &s.path))?;
        let record = s.path.with_extension("json");
        let part = record.with_extension("json.partial");
        let text = serde_json::to_vec_pretty(s).unwrap_or_default();
        fs::write(&part, text).map_err(io("writing", &part))?;
        fs::rename(&part, &record).map_err(io("writing", &record))
    }

    /// The image `reference` names: a file, a digest or a unique prefix
    /// of one.
    pub fn find(&self, reference: &str) -> Result<Stage1, Stage1Error> {
        let as_path = Path::new(reference);
        if as_path.is_file() {
            return self.describe_file(as_path);
        }
        let want = hex_of(reference);
        let mut found: Vec<Stage1> = self
            .list()?
            .into_iter()
            .filter(|s| !want.is_empty() && hex_of(&s.digest).starts_with(want))
            .collect();
        match found.len() {
            0 => Err(Stage1Error::NotFound(reference.into())),
            1 => Ok(found.remove(0)),
            _ => Err(Stage1Error::Ambiguous {
                reference: reference.into(),
                matches: found
                    .iter()
                    .map(|s| s.digest.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// An image given as a file (one shipped from another host): its
    /// record beside it if there is one, else what its bytes say.
    fn describe_file(&self, path: &Path) -> Result<Stage1, Stage1Error> {
        let digest = file_digest(path)?;
        let record = path.with_extension("json");
        if let Ok(text) = fs::read(&record) {
            if let Ok(mut s) = serde_json::from_slice::<Stage1>(&text) {
                if s.digest == digest {
                    s.path = path.to_path_buf();
                    return Ok(s);
                }
            }
        }
        let size = fs::metadata(path).map_err(io("reading", path))?.len();
        Ok(Stage1 {
            name: NAME.into(),
            version: String::new(),
            digest,
            kernel: String::new(),
            agent: String::new(),
            gzip: false,
            size,
            created: 0,
            path: path.to_path_buf(),
        })
    }
}

impl Stage1 {
    /// Refuses an image whose modules are for another kernel than `kernel`
    /// (an image without a record is taken on trust).
    pub fn check_kernel(&self, modules: Option<&Path>) -> Result<(), Stage1Error> {
        let kernel = kernel_of(modules);
        if self.kernel.is_empty() || self.kernel == kernel {
            return Ok(());
        }
        Err(Stage1Error::WrongKernel {
            digest: self.digest.clone(),
            image_kernel: self.kernel.clone(),
            kernel,
        })
    }
}

/// The kernel release a modules directory is for (`/lib/modules/<it>`).
fn kernel_of(modules: Option<&Path>) -> String {
    modules
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(dir: &Path, bytes: &[u8]) -> PathBuf {
        let p = dir.join("agent");
        fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn an_image_is_built_once_and_found_by_what_it_was_built_from() {
        let d = tempfile::tempdir().unwrap();
        let store = Stage1Store::new(d.path());
        let a = agent(d.path(), b"agent one");
        let first = store.ensure(&a, None, false, true).unwrap();
        assert!(first.path.is_file());
        assert_eq!(first.digest, file_digest(&first.path).unwrap());
        let again = store.ensure(&a, None, false, true).unwrap();
        assert_eq!(again.digest, first.digest);
        assert_eq!(store.list().unwrap().len(), 1);
        // Another agent build is another image.
        let a = agent(d.path(), b"agent two");
        let second = store.ensure(&a, None, false, true).unwrap();
        assert_ne!(second.digest, first.digest);
        assert_eq!(store.list().unwrap().len(), 2);
        assert_eq!(
            store.find(&first.digest[7..19]).unwrap().digest,
            first.digest
        );
        assert_eq!(
            store.find(first.path.to_str().unwrap()).unwrap().digest,
            first.digest
        );
        assert!(matches!(
            store.find("ffffffff"),
            Err(Stage1Error::NotFound(_))
        ));
    }

    #[test]
    fn describing_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let store = Stage1Store::new(d.path());
        let a = agent(d.path(), b"agent");
        store.ensure(&a, None, false, false).unwrap();
        assert!(!d.path().join("stage1").exists());
    }

    #[test]
    fn an_image_for_another_kernel_is_refused() {
        let s = Stage1 {
            name: NAME.into(),
            version: "0".into(),
            digest: "sha256:ab".into(),
            kernel: "6.1.0-1".into(),
            agent: String::new(),
            gzip: false,
            size: 0,
            created: 0,
            path: PathBuf::new(),
        };
        assert!(s
            .check_kernel(Some(Path::new("/lib/modules/6.1.0-1")))
            .is_ok());
        let e = s
            .check_kernel(Some(Path::new("/lib/modules/6.2.0")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("6.1.0-1") && e.contains("6.2.0"), "{e}");
    }
}
