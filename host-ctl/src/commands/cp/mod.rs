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

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use kvmpod_api::iostream::{CopyRequest, Input, Output, Request};
use tokio::sync::mpsc;

mod archive;
mod extract;

use archive::{archive, ChunkWriter};
use extract::{ChunkReader, Plan};

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
pub(super) const CHUNK: usize = 64 * 1024;

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
    // One reading of the session, kept across the race: a frame half
    // read is never dropped.
    let result = outcome(&mut rx, &Sink::Nowhere);
    tokio::pin!(send, result);
    let got = tokio::select! {
        got = &mut result => got,
        sent = &mut send => {
            match sent {
                Ok(Ok(())) => (&mut result).await,
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
    use std::ffi::OsStr;
    use std::os::unix::fs::symlink;
    use std::os::unix::fs::PermissionsExt;

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
