//! A fake agent's side of the log stream, for the tests of the stream and
//! the collectors.

use kvmpod_api::logstream::{decode_ack, FrameHeader, FrameKind, StreamId, ACK_LEN};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::store::last_end;
use super::store::tests::records;
use super::LogFiles;

/// An encoded frame.
pub fn frame(kind: FrameKind, offset: u64, data: &[u8], count: u64) -> Vec<u8> {
    let h = FrameHeader {
        kind,
        stream: StreamId::Stdout,
        len: data.len() as u32,
        offset,
        boottime_ns: 1_000_000,
        count,
    };
    let mut out = h.encode().to_vec();
    out.extend_from_slice(data);
    out
}

pub fn data(offset: u64, bytes: &[u8]) -> Vec<u8> {
    frame(FrameKind::Data, offset, bytes, 0)
}

pub fn end(offset: u64) -> Vec<u8> {
    frame(FrameKind::End, offset, b"", 0)
}

/// A line the host sent (read a byte at a time, as the agent must, to leave
/// what follows unread).
pub async fn read_line(s: &mut (impl AsyncRead + Unpin)) -> String {
    let mut line = Vec::new();
    loop {
        let b = s.read_u8().await.unwrap();
        if b == b'\n' {
            return String::from_utf8(line).unwrap();
        }
        line.push(b);
    }
}

/// The next acknowledgement, or `None` when the host closed.
pub async fn read_ack(s: &mut (impl AsyncRead + Unpin)) -> Option<u64> {
    let mut b = [0u8; ACK_LEN];
    s.read_exact(&mut b).await.ok()?;
    Some(decode_ack(&b).unwrap())
}

/// An app's whole kept output, oldest file first.
pub fn all_bytes(files: &LogFiles) -> Vec<u8> {
    let mut out = Vec::new();
    for p in files
        .rotated
        .iter()
        .rev()
        .chain(std::iter::once(&files.current))
    {
        for r in records(p) {
            out.extend(r.bytes());
        }
    }
    out
}

/// Where the output continues after the records in the files.
pub fn file_end(files: &LogFiles) -> u64 {
    std::iter::once(&files.current)
        .chain(&files.rotated)
        .find_map(|p| last_end(p).unwrap())
        .unwrap_or(0)
}

/// Deterministic output: numbered lines.
pub fn text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(format!("line {i:08} of the app's output\n").as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}
