//! `host-ctl attach` on the io stream: an app's output from the request on,
//! read from its log buffer (without acknowledging: what it reads stays
//! for the log stream), until the app is over; then its exit status. The
//! host's stdin frames feed the app's stdin (apps with `"stdin": true`),
//! its resizes the app's terminal (apps with `"terminal": true`); signals
//! mean nothing here and are ignored. A host that goes away leaves the
//! app running.

use std::sync::Arc;

use kvmpod_api::iostream::{self as wire, ExitStatus, MAX_FRAME_DATA};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};

use super::input::read_input;
use super::RpcError;
use crate::pod::{AppRecord, Chunk, Item, Pod, Stream};

/// Output taken from the buffer at once, then written out.
const BATCH: usize = 1 << 20;
/// Frames smaller than this are gathered into one write.
const WRITE_BUFFER: usize = 64 * 1024;

/// The app the host names.
pub(super) fn open(pod: &Pod, name: &str) -> Result<Arc<AppRecord>, RpcError> {
    pod.app(name)
        .ok_or_else(|| RpcError::unknown_app(pod, name))
}

/// Serves an attached host: output from offset `from` on, while its input
/// is fed to the app, until the app is over or the host is gone.
pub(super) async fn run<R, W>(
    pod: &Pod,
    app: &AppRecord,
    from: u64,
    mut r: R,
    w: W,
) -> Result<(), RpcError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    tokio::select! {
        sent = follow(pod, app, from, w) => sent,
        fed = feed(app, &mut r) => fed,
    }
}

/// Sends the app's output from `cursor` on, following it until the app's
/// output is complete and the app is over; then its exit status.
async fn follow<W: AsyncWrite + Unpin>(
    pod: &Pod,
    app: &AppRecord,
    mut cursor: u64,
    w: W,
) -> Result<(), RpcError> {
    let mut w = BufWriter::with_capacity(WRITE_BUFFER, w);
    // Subscribed before the first read, so no append is missed between a
    // read and the wait that follows it.
    let mut changes = app.logs.subscribe();
    loop {
        let read = app.logs.read(cursor, BATCH);
        if !read.items.is_empty() {
            for item in read.items {
                // Output dropped (non-blocking mode) or already let go
                // after the host persisted it is skipped.
                if let Item::Data(c) = item {
                    write_chunk(&mut w, &c).await?;
                }
            }
            w.flush().await?;
            cursor = read.next;
            continue;
        }
        if read.finished {
            break;
        }
        if changes.changed().await.is_err() {
            return Ok(());
        }
    }
    // The output ends before the app's status says it exited.
    app.wait().await;
    let st = pod.status();
    let status = st.apps.iter().find(|a| a.name == app.name()).map_or(
        ExitStatus { code: 0, signal: 0 },
        |a| ExitStatus {
            code: a.exit_code,
            signal: a.signal,
        },
    );
    w.write_all(&wire::Output::Exit(status).encode()).await?;
    w.flush().await?;
    Ok(())
}

/// Writes a chunk of output as one or more frames.
async fn write_chunk<W: AsyncWrite + Unpin>(
    w: &mut BufWriter<W>,
    c: &Chunk,
) -> Result<(), RpcError> {
    for part in c.data.as_slice().chunks(MAX_FRAME_DATA) {
        // At most MAX_FRAME_DATA, which fits a u32.
        let len = part.len() as u32;
        let header = match c.stream {
            Stream::Stdout => wire::Output::Stdout(len),
            Stream::Stderr => wire::Output::Stderr(len),
        };
        w.write_all(&header.encode()).await?;
        w.write_all(part).await?;
    }
    Ok(())
}

/// Feeds the host's stdin frames to the app until the host is gone.
async fn feed<R: AsyncRead + Unpin>(app: &AppRecord, r: &mut R) -> Result<(), RpcError> {
    let mut data = Vec::new();
    loop {
        match read_input(r, &mut data).await? {
            None => return Ok(()),
            Some(wire::Input::Stdin(_)) => {
                if let Err(e) = app.write_stdin(&data).await {
                    log::debug!("attach: {e}");
                }
            }
            Some(wire::Input::CloseStdin) => app.end_stdin().await,
            Some(wire::Input::Resize(size)) => {
                if let Err(e) = app.resize(size.rows, size.cols) {
                    log::debug!("attach: resizing {}'s terminal: {e}", app.name());
                }
            }
            Some(wire::Input::Signal(_) | wire::Input::Detach) => {}
        }
    }
}
