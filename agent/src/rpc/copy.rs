//! `host-ctl cp` on the io stream. Copy out: a tar archive of a path of
//! the app's root goes to the host as stdout frames, then the exit frame
//! (0, or the error on stderr and 1). Copy in: the host's stdin frames are
//! a tar archive, extracted into a directory of the app's root; then the
//! exit frame, the same way. The file system work (storage's `copy_out`
//! and `copy_in`) runs on a blocking thread, fed by or feeding the
//! connection through a bounded channel, so that other connections go on.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;

use kvmpod_api::iostream::{self as wire, CopyRequest, ExitStatus};
use kvmpod_api::layout;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::input::read_input;
use super::RpcError;
use crate::pod::Pod;
use crate::storage::{self, StorageError};

/// Archive bytes gathered before a frame goes.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the blocking thread and the connection.
const IN_FLIGHT: usize = 4;

const _: () = assert!(CHUNK <= wire::MAX_FRAME_DATA);

/// Checks a copy request: the app, and its root. The root's handle.
pub(super) fn open(pod: &Pod, req: &CopyRequest) -> Result<OwnedFd, RpcError> {
    let app = pod
        .app(&req.app)
        .ok_or_else(|| RpcError::unknown_app(pod, &req.app))?;
    if pod.is_stopping() {
        return Err(RpcError::Stopping);
    }
    if app.running_pid().is_none() {
        return Err(RpcError::NotRunning(req.app.clone()));
    }
    Ok(storage::open_root(&layout::app_rootfs(app.name()))?)
}

/// Sends the exit frame: 0, or `error` on stderr and 1.
async fn finish<W: AsyncWrite + Unpin>(
    w: &mut W,
    result: Result<(), String>,
) -> Result<(), RpcError> {
    let code = match result {
        Ok(()) => 0,
        Err(why) => {
            let why = format!("{why}\n");
            let data = &why.as_bytes()[..why.len().min(CHUNK)];
            w.write_all(&wire::Output::Stderr(data.len() as u32).encode())
                .await?;
            w.write_all(data).await?;
            1
        }
    };
    w.write_all(&wire::Output::Exit(ExitStatus { code, signal: 0 }).encode())
        .await?;
    w.flush().await?;
    Ok(())
}

/// A writer that hands full chunks to the connection.
struct ChunkWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the host went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

fn joined(r: Result<Result<(), StorageError>, tokio::task::JoinError>) -> Result<(), String> {
    match r {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("copy: {e}")),
    }
}

/// Sends a tar archive of `req.path`.
pub(super) async fn copy_out<W: AsyncWrite + Unpin>(
    root: OwnedFd,
    req: &CopyRequest,
    mut w: W,
) -> Result<(), RpcError> {
    let (tx, mut rx) = mpsc::channel(IN_FLIGHT);
    let path = req.path.clone();
    let work = tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        storage::copy_out(&root, &path, &mut out)
    });
    while let Some(chunk) = rx.recv().await {
        w.write_all(&wire::Output::Stdout(chunk.len() as u32).encode())
            .await?;
        w.write_all(&chunk).await?;
    }
    finish(&mut w, joined(work.await)).await
}

/// A reader of the chunks the connection receives; an `Err` chunk means
/// the host went away before the end of its archive.
struct ChunkReader {
    rx: mpsc::Receiver<Result<Vec<u8>, ()>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Some(Err(())) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the host went away",
                    ))
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

/// Extracts the archive the host sends into `req.path`.
pub(super) async fn copy_in<R, W>(
    root: OwnedFd,
    req: &CopyRequest,
    mut r: R,
    mut w: W,
) -> Result<(), RpcError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let path = req.path.clone();
    let work = tokio::task::spawn_blocking(move || {
        let reader = ChunkReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        };
        storage::copy_in(&root, &path, reader)
    });
    let feed = async {
        let mut data = Vec::new();
        loop {
            match read_input(&mut r, &mut data).await {
                Ok(Some(wire::Input::Stdin(_))) => {
                    if tx.send(Ok(std::mem::take(&mut data))).await.is_err() {
                        break; // the extraction is over
                    }
                }
                Ok(Some(wire::Input::CloseStdin)) => break,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    let _ = tx.send(Err(())).await;
                    break;
                }
            }
        }
        drop(tx);
    };
    tokio::pin!(work);
    let result = tokio::select! {
        done = &mut work => done,
        () = feed => work.await,
    };
    finish(&mut w, joined(result)).await
}
