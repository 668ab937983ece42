//! `host-ctl cp SRC DEST`: copies files and directory trees between this
//! host and an app of a running pod, as `docker cp` does. One side is
//! `POD:APP:/path`, the other a host path (`./a:b` for one holding a
//! colon), or `-`: a tar archive on stdin (copy in) or stdout (copy out).
//!
//! The data travels as a tar archive on an io stream session
//! (`COPYOUT`/`COPYIN`). Copying out, an existing directory DEST gets the
//! source under its own name; otherwise DEST is the copy's new name. The
//! archive is extracted here entry by entry: absolute names, `..`, hard
//! links, devices and fifos are refused, and no symlink already in the
//! destination tree (or made by the archive) is followed; files get the
//! archive's mode without setuid and setgid, and its mtime, and belong to
//! whoever runs host-ctl. Copying in, the archive of the host source is
//! built as it is sent (symlinks kept as symlinks, not followed), and the
//! agent extracts it the same careful way, keeping owners and modes.

use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use kvmpod_api::iostream::{CopyRequest, Input, Output, Request};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use tokio::sync::mpsc;

use super::exec::agent_endpoint;
use crate::agent::iostream;
use crate::pod::StoredPod;

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A path in an app's root.
    Pod {
        pod: String,
        app: String,
        path: String,
    },
    /// A path on this host.
    Host(PathBuf),
    /// `-`: a tar archive on stdin or stdout.
    Stdio,
}

impl Location {
    /// `POD:APP:/path`, `-`, or a host path; a colon before any slash
    /// means a pod.
    pub fn parse(arg: &str) -> Result<Location> {
        if arg == "-" {
            return Ok(Location::Stdio);
        }
        let colon = arg.find(':');
        let slash = arg.find('/');
        match colon {
            Some(c) if slash.is_none_or(|s| c < s) => {
                let mut parts = arg.splitn(3, ':');
                let (Some(pod), Some(app), Some(path)) = (parts.next(), parts.next(), parts.next())
                else {
                    bail!("{arg:?}: expected POD:APP:/path (a host path with a colon: ./{arg})");
                };
                if pod.is_empty() || app.is_empty() || !path.starts_with('/') {
                    bail!("{arg:?}: expected POD:APP:/path, an absolute path in the app");
                }
                Ok(Location::Pod {
                    pod: pod.into(),
                    app: app.into(),
                    path: path.into(),
                })
            }
            _ if arg.is_empty() => bail!("an empty path"),
            _ => Ok(Location::Host(PathBuf::from(arg))),
        }
    }
}

/// Chunks of archive in flight between a blocking thread and the session.
const IN_FLIGHT: usize = 4;
/// Archive bytes gathered before a frame goes.
const CHUNK: usize = 64 * 1024;

/// Runs `host-ctl cp`: 0 when done, 1 when the guest side failed (its
/// message printed).
pub async fn run(state_dir: &Path, src: &str, dest: &str) -> Result<i32> {
    match (Location::parse(src)?, Location::parse(dest)?) {
        (Location::Pod { pod, app, path }, to @ (Location::Host(_) | Location::Stdio)) => {
            copy_out(state_dir, &pod, CopyRequest { app, path }, to).await
        }
        (from @ (Location::Host(_) | Location::Stdio), Location::Pod { pod, app, path }) => {
            copy_in(state_dir, &pod, CopyRequest { app, path }, from).await
        }
        (Location::Pod { .. }, Location::Pod { .. }) => {
            bail!("copying between two pods is not supported: one side must be a host path")
        }
        _ => bail!("one side must be in a pod: POD:APP:/path"),
    }
}

/// Where a copy's archive goes as it arrives.
enum Sink {
    Stdout,
    /// To the extraction; it may have stopped (on an error it reports).
    Extract(mpsc::Sender<Vec<u8>>),
    /// Nowhere: copy in has no output but the guest's message.
    Nowhere,
}

/// Reads the session's frames until its exit: the code, with the guest's
/// message when it failed.
async fn outcome<S: tokio::io::AsyncRead>(
    rx: &mut iostream::OutputReceiver<S>,
    sink: &Sink,
) -> Result<(i32, String)> {
    let mut message = Vec::new();
    loop {
        match rx.next().await.map_err(|e| anyhow!("cp: {e}"))? {
            Some((Output::Stdout(_), data)) => match sink {
                Sink::Stdout => {
                    let mut out = io::stdout().lock();
                    out.write_all(data)
                        .and_then(|()| out.flush())
                        .context("writing to stdout")?;
                }
                Sink::Extract(tx) => {
                    let _ = tx.send(data.to_vec()).await;
                }
                Sink::Nowhere => {}
            },
            Some((Output::Stderr(_), data)) => message.extend_from_slice(data),
            Some((Output::Exit(x), _)) => {
                let text = String::from_utf8_lossy(&message).trim_end().to_string();
                return Ok((x.code, text));
            }
            None => bail!("cp: the agent closed the connection before the end of the copy"),
        }
    }
}

fn guest_failed(code: i32, message: &str) -> i32 {
    if code == 0 {
        return 0;
    }
    eprintln!("host-ctl: cp: {message}");
    1
}

/// The last component of a guest path; None for `/`.
fn base_name(path: &str) -> Option<OsString> {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && *n != ".")
        .map(OsString::from)
}

async fn copy_out(state_dir: &Path, id: &str, req: CopyRequest, to: Location) -> Result<i32> {
    let plan = match &to {
        Location::Host(dest) => Some(Plan::for_dest(dest, base_name(&req.path))?),
        _ => None,
    };
    let pod = StoredPod::open(state_dir, id)?;
    let (_tx, mut rx) = iostream::open(agent_endpoint(&pod)?, &Request::CopyOut(req))
        .await
        .map_err(|e| anyhow!("cp: {e}"))?;
    let Some(plan) = plan else {
        let (code, message) = outcome(&mut rx, &Sink::Stdout).await?;
        return Ok(guest_failed(code, &message));
    };
    let (chunks, feed) = mpsc::channel::<Vec<u8>>(IN_FLIGHT);
    let extract = tokio::task::spawn_blocking(move || {
        plan.extract(ChunkReader {
            rx: feed,
            buf: Vec::new(),
            pos: 0,
        })
    });
    let sink = Sink::Extract(chunks);
    let got = outcome(&mut rx, &sink).await;
    drop(sink);
    let (code, message) = match got {
        Ok(got) => got,
        Err(e) => {
            extract.abort();
            return Err(e);
        }
    };
    if code != 0 {
        // The extraction ends with its input; what it made stays, as
        // docker leaves it.
        let _ = extract.await;
        return Ok(guest_failed(code, &message));
    }
    extract.await.map_err(|e| anyhow!("cp: {e}"))??;
    Ok(0)
}

/// Reads the chunks of archive the session receives.
struct ChunkReader {
    rx: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Where a received archive is extracted, as `docker cp` places it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The existing directory entries are extracted into.
    pub into: PathBuf,
    /// The archive's top entry's new name, when DEST names the copy.
    pub rename: Option<OsString>,
}

impl Plan {
    /// An existing directory DEST receives the source under its own name
    /// (the contents, for `/`); anything else is the copy's new name in
    /// an existing directory.
    pub fn for_dest(dest: &Path, source: Option<OsString>) -> Result<Plan> {
        if dest.is_dir() {
            return Ok(match source {
                Some(_) => Plan {
                    into: dest.to_path_buf(),
                    rename: None,
                },
                None => Plan {
                    into: dest.to_path_buf(),
                    rename: Some(".".into()),
                },
            });
        }
        let name = dest
            .file_name()
            .ok_or_else(|| anyhow!("{}: not a name to copy to", dest.display()))?;
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            bail!("{}: no such directory", parent.display());
        }
        Ok(Plan {
            into: parent,
            rename: Some(name.to_os_string()),
        })
    }

    /// The host path of entry `name`, checked: no absolute name, no `..`,
    /// the top entry renamed; None for the archive's `.`.
    fn target(&self, name: &Path, top: &mut Option<OsString>) -> Result<Option<PathBuf>> {
        let shown = name.display();
        let mut parts: Vec<&OsStr> = Vec::new();
        for c in name.components() {
            match c {
                Component::Normal(p) => parts.push(p),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => {
                    bail!("archive entry {shown:?} is an absolute path; refusing it")
                }
                Component::ParentDir => {
                    bail!("archive entry {shown:?} has a \"..\" component; refusing it")
                }
            }
        }
        if let Some(new) = &self.rename {
            let first = parts
                .first()
                .map_or(OsString::from("."), |p| p.to_os_string());
            if top.get_or_insert_with(|| first.clone()) != &first {
                bail!("archive entry {shown:?} is not under the archive's top entry");
            }
            if parts.is_empty() {
                parts.push(new);
            } else {
                parts[0] = new;
            }
        }
        let parts: Vec<&OsStr> = parts.into_iter().filter(|p| *p != ".").collect();
        if parts.is_empty() {
            return Ok(None);
        }
        Ok(Some(parts.iter().collect()))
    }

    /// Makes the directories of `rel` below `into` that are missing; a
    /// symlink on the way is refused, never followed.
    fn parents(&self, rel: &Path, shown: &str) -> Result<()> {
        let mut at = self.into.clone();
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        for c in parent.components() {
            at.push(c);
            match fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => bail!(
                    "archive entry {shown:?}: {} is a symlink; not following it",
                    at.display()
                ),
                Ok(_) => bail!(
                    "archive entry {shown:?}: {} is not a directory",
                    at.display()
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&at).with_context(|| format!("creating {}", at.display()))?;
                }
                Err(e) => return Err(e).with_context(|| format!("{}", at.display())),
            }
        }
        Ok(())
    }

    /// Extracts the archive read from `r`.
    pub fn extract<R: Read>(&self, r: R) -> Result<()> {
        let mut archive = tar::Archive::new(r);
        let mut top = None;
        // Directories get their mode and mtime once their entries are in.
        let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
        for entry in archive.entries().context("reading the archive")? {
            let mut entry = entry.context("reading the archive")?;
            let name = entry
                .path()
                .context("an archive entry's name")?
                .into_owned();
            let shown = name.display().to_string();
            let Some(rel) = self.target(&name, &mut top)? else {
                continue;
            };
            self.parents(&rel, &shown)?;
            let path = self.into.join(&rel);
            let h = entry.header();
            let mode = h.mode().unwrap_or(0o644) & 0o1777;
            let mtime = h.mtime().unwrap_or(0);
            match h.entry_type() {
                tar::EntryType::Directory => {
                    match fs::symlink_metadata(&path) {
                        Ok(m) if m.is_dir() => {}
                        Ok(_) => bail!("archive entry {shown:?}: {} is in the way", path.display()),
                        Err(_) => fs::create_dir(&path)
                            .with_context(|| format!("creating {}", path.display()))?,
                    }
                    dirs.push((path, mode, mtime));
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    replace(&path, &shown)?;
                    let mut f = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    io::copy(&mut entry, &mut f)
                        .with_context(|| format!("writing {}", path.display()))?;
                    f.set_permissions(fs::Permissions::from_mode(mode))?;
                    drop(f);
                    set_mtime(&path, mtime)?;
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .context("a symlink's target")?
                        .ok_or_else(|| anyhow!("archive entry {shown:?}: a symlink without a target"))?
                        .into_owned();
                    replace(&path, &shown)?;
                    std::os::unix::fs::symlink(&target, &path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    set_mtime(&path, mtime)?;
                }
                other => bail!(
                    "archive entry {shown:?} is a {}; only files, directories and symlinks are copied",
                    kind_name(other)
                ),
            }
        }
        for (path, mode, mtime) in dirs.into_iter().rev() {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .with_context(|| format!("{}", path.display()))?;
            set_mtime(&path, mtime)?;
        }
        Ok(())
    }
}

fn kind_name(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "fifo",
        _ => "entry of another type",
    }
}

/// Removes what is at `path` (not a directory) for a new file or symlink.
fn replace(path: &Path, shown: &str) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => bail!("archive entry {shown:?}: {} is a directory", path.display()),
        Ok(_) => fs::remove_file(path).with_context(|| format!("replacing {}", path.display())),
        Err(_) => Ok(()),
    }
}

fn set_mtime(path: &Path, mtime: u64) -> Result<()> {
    let t = TimeSpec::new(mtime as i64, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .with_context(|| format!("setting {}'s mtime", path.display()))
}

/// Writes chunks of archive to the session.
struct ChunkWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the copy ended"))
    }
}

/// Writes a tar archive of `src` (named after its last component, its
/// symlinks kept as symlinks) to `w`.
pub fn archive<W: Write>(src: &Path, w: W) -> Result<()> {
    let name = src
        .file_name()
        .map(OsString::from)
        .or_else(|| fs::canonicalize(src).ok()?.file_name().map(OsString::from))
        .ok_or_else(|| anyhow!("{}: no name to copy it as", src.display()))?;
    let meta = fs::symlink_metadata(src).with_context(|| format!("{}", src.display()))?;
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    if meta.is_dir() {
        b.append_dir_all(&name, src)
    } else {
        b.append_path_with_name(src, &name)
    }
    .with_context(|| format!("archiving {}", src.display()))?;
    b.into_inner()
        .and_then(|mut w| w.flush())
        .with_context(|| format!("archiving {}", src.display()))?;
    Ok(())
}

async fn copy_in(state_dir: &Path, id: &str, req: CopyRequest, from: Location) -> Result<i32> {
    if let Location::Host(src) = &from {
        fs::symlink_metadata(src).with_context(|| format!("{}", src.display()))?;
    }
    let pod = StoredPod::open(state_dir, id)?;
    let (tx, mut rx) = iostream::open(agent_endpoint(&pod)?, &Request::CopyIn(req))
        .await
        .map_err(|e| anyhow!("cp: {e}"))?;
    let sender = tx.clone();
    let send = tokio::spawn(async move {
        let Location::Host(src) = from else {
            // `-`: stdin is the archive, passed on as it is.
            sender.pump_stdin(tokio::io::stdin(), true).await;
            return Ok(());
        };
        let (chunks, mut out) = mpsc::channel::<Vec<u8>>(IN_FLIGHT);
        let build = tokio::task::spawn_blocking(move || {
            archive(
                &src,
                ChunkWriter {
                    tx: chunks,
                    buf: Vec::with_capacity(CHUNK),
                },
            )
        });
        while let Some(chunk) = out.recv().await {
            if sender.send_stdin(&chunk).await.is_err() {
                break;
            }
        }
        // Only a complete archive is closed: otherwise the agent sees the
        // connection end, and extracts nothing more.
        build.await.map_err(|e| anyhow!("cp: {e}"))??;
        let _ = sender.send(Input::CloseStdin).await;
        Ok::<(), anyhow::Error>(())
    });
    tokio::pin!(send);
    let got = tokio::select! {
        got = outcome(&mut rx, &Sink::Nowhere) => got,
        sent = &mut send => {
            match sent {
                Ok(Ok(())) => outcome(&mut rx, &Sink::Nowhere).await,
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow!("cp: {e}")),
            }
        }
    };
    send.abort();
    drop(tx);
    let (code, message) = got?;
    Ok(guest_failed(code, &message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn locations() {
        assert_eq!(Location::parse("-").unwrap(), Location::Stdio);
        assert_eq!(
            Location::parse("p1:web:/etc/x y").unwrap(),
            Location::Pod {
                pod: "p1".into(),
                app: "web".into(),
                path: "/etc/x y".into()
            }
        );
        assert_eq!(
            Location::parse("./a:b").unwrap(),
            Location::Host("./a:b".into())
        );
        assert_eq!(
            Location::parse("/tmp/a:b").unwrap(),
            Location::Host("/tmp/a:b".into())
        );
        for bad in ["p:web", "p:web:rel", ":a:/x", "p::/x", ""] {
            assert!(Location::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, link, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o755);
            h.set_mtime(1_600_000_000);
            h.set_size(data.len() as u64);
            // Names the tar crate would refuse to write go in raw.
            let raw = h.as_old_mut();
            raw.name[..name.len()].copy_from_slice(name.as_bytes());
            if !link.is_empty() {
                raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn extraction_refuses_escapes() {
        let d = tempfile::tempdir().unwrap();
        let into = d.path().join("into");
        let outside = d.path().join("outside");
        fs::create_dir_all(&into).unwrap();
        fs::create_dir_all(&outside).unwrap();
        let plan = Plan {
            into: into.clone(),
            rename: None,
        };
        use tar::EntryType::*;
        for (a, want) in [
            (tar_of(&[("/abs", Regular, "", b"x")]), "absolute"),
            (tar_of(&[("a/../../x", Regular, "", b"x")]), "\"..\""),
            (
                tar_of(&[
                    ("dir", Symlink, outside.to_str().unwrap(), b""),
                    ("dir/file", Regular, "", b"x"),
                ]),
                "symlink",
            ),
            (tar_of(&[("h", Link, "x", b"")]), "hard link"),
        ] {
            let e = plan.extract(&a[..]).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        // A symlink already in the destination is not followed either.
        symlink(&outside, into.join("there")).unwrap();
        let e = plan
            .extract(&tar_of(&[("there/f", Regular, "", b"x")])[..])
            .unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        // Nor is one replaced by a file.
        fs::write(outside.join("secret"), "s").unwrap();
        symlink(outside.join("secret"), into.join("s")).unwrap();
        plan.extract(&tar_of(&[("s", Regular, "", b"new")])[..])
            .unwrap();
        assert_eq!(fs::read_to_string(outside.join("secret")).unwrap(), "s");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
    }

    #[test]
    fn a_tree_round_trips_through_archive_and_extract() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/x"), "x").unwrap();
        fs::set_permissions(src.join("sub/x"), fs::Permissions::from_mode(0o4750)).unwrap();
        symlink("sub/x", src.join("link")).unwrap();
        let mut a = Vec::new();
        archive(&src, &mut a).unwrap();
        // Into an existing directory: under the source's name.
        let dest = d.path().join("dest");
        fs::create_dir(&dest).unwrap();
        Plan::for_dest(&dest, Some("src".into()))
            .unwrap()
            .extract(&a[..])
            .unwrap();
        let m = fs::metadata(dest.join("src/sub/x")).unwrap();
        // setuid is dropped on the host.
        assert_eq!(m.permissions().mode() & 0o7777, 0o750);
        assert_eq!(
            fs::read_link(dest.join("src/link")).unwrap(),
            Path::new("sub/x")
        );
        // A new name.
        let renamed = d.path().join("renamed");
        let plan = Plan::for_dest(&renamed, Some("src".into())).unwrap();
        assert_eq!(plan.rename.as_deref(), Some(OsStr::new("renamed")));
        plan.extract(&a[..]).unwrap();
        assert_eq!(fs::read_to_string(renamed.join("sub/x")).unwrap(), "x");
        assert!(Plan::for_dest(&d.path().join("no/such"), None).is_err());
    }
}
