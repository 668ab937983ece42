//! The log stream: how an app's output travels from the agent to the host
//! that persists it, on a vsock connection of its own (port
//! [`crate::layout::LOG_VSOCK_PORT`]) rather than as one RPC message per
//! chunk, and how the host acknowledges what it has persisted so the agent
//! can let go of it.
//!
//! An app's stdout and stderr share one offset space: the position of a
//! byte in the app's whole output, in the order the agent read it. That
//! keeps the interleaving of the two streams, and lets one offset say what
//! the host has persisted.
//!
//! ```text
//! host → agent   LOGS <app> <from>\n        the app, and the first offset wanted
//! agent → host   OK\n  or  ERR <why>\n
//! agent → host   frames: a 32-byte header, then `len` bytes of data
//! host → agent   acks:   16 bytes, "everything before <offset> is persisted"
//! ```
//!
//! The agent keeps an app's output until it is acknowledged; when the host
//! stops acknowledging, the agent stops reading the app's pipe once its
//! buffer is full, and the app blocks (unless the app asked for Docker's
//! non-blocking mode, where the agent drops instead and sends a
//! [`FrameKind::Dropped`] frame saying how much). A new reader asks for the
//! offset after what it persisted, so nothing is lost or repeated.

use std::fmt;

/// The request line's verb.
pub const REQUEST_VERB: &str = "LOGS";

/// The longest request line the agent reads.
pub const MAX_REQUEST_LINE: usize = 256;

/// The longest data payload of one frame.
pub const MAX_FRAME_DATA: usize = 1 << 20;

/// Which of an app's streams a frame's bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamId {
    Stdout,
    Stderr,
}

impl StreamId {
    fn code(self) -> u8 {
        match self {
            StreamId::Stdout => 1,
            StreamId::Stderr => 2,
        }
    }

    fn from_code(c: u8) -> Option<StreamId> {
        match c {
            1 => Some(StreamId::Stdout),
            2 => Some(StreamId::Stderr),
            _ => None,
        }
    }
}

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// `len` bytes of output at `offset`.
    Data,
    /// `count` bytes at `offset` were dropped (non-blocking mode only); the
    /// next data starts at `offset + count`.
    Dropped,
    /// The app's output is complete: nothing will follow `offset`.
    End,
}

impl FrameKind {
    fn code(self) -> u8 {
        match self {
            FrameKind::Data => 1,
            FrameKind::Dropped => 2,
            FrameKind::End => 3,
        }
    }

    fn from_code(c: u8) -> Option<FrameKind> {
        match c {
            1 => Some(FrameKind::Data),
            2 => Some(FrameKind::Dropped),
            3 => Some(FrameKind::End),
            _ => None,
        }
    }
}

/// A frame's fixed header (32 bytes on the wire, little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    pub stream: StreamId,
    /// Bytes of data after the header (Data frames only).
    pub len: u32,
    /// Position in the app's whole output.
    pub offset: u64,
    /// The guest's `CLOCK_BOOTTIME` when the agent read the bytes.
    pub boottime_ns: u64,
    /// Bytes dropped (Dropped frames only).
    pub count: u64,
}

/// Size of an encoded [`FrameHeader`].
pub const HEADER_LEN: usize = 32;

/// Size of an encoded acknowledgement.
pub const ACK_LEN: usize = 16;

const ACK_CODE: u8 = 0x10;

/// What is wrong with bytes read from the other side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("bad log stream request {0:?}: expected \"LOGS <app> <offset>\"")]
    BadRequest(String),
    #[error("bad log stream frame: {0}")]
    BadFrame(String),
    #[error("bad log stream acknowledgement: {0}")]
    BadAck(String),
}

impl FrameHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.kind.code();
        b[1] = self.stream.code();
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..16].copy_from_slice(&self.offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.boottime_ns.to_le_bytes());
        b[24..32].copy_from_slice(&self.count.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<FrameHeader, StreamError> {
        let bad = |why: String| StreamError::BadFrame(why);
        let kind = FrameKind::from_code(b[0]).ok_or_else(|| bad(format!("kind {}", b[0])))?;
        let stream = StreamId::from_code(b[1]).ok_or_else(|| bad(format!("stream {}", b[1])))?;
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let len = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        if kind != FrameKind::Data && len != 0 {
            return Err(bad(format!("a {kind:?} frame carries {len} bytes")));
        }
        if len as usize > MAX_FRAME_DATA {
            return Err(bad(format!("{len} bytes in one frame")));
        }
        Ok(FrameHeader {
            kind,
            stream,
            len,
            offset: u64_at(8),
            boottime_ns: u64_at(16),
            count: u64_at(24),
        })
    }
}

/// "Everything before `offset` is persisted."
pub fn encode_ack(offset: u64) -> [u8; ACK_LEN] {
    let mut b = [0u8; ACK_LEN];
    b[0] = ACK_CODE;
    b[8..16].copy_from_slice(&offset.to_le_bytes());
    b
}

pub fn decode_ack(b: &[u8; ACK_LEN]) -> Result<u64, StreamError> {
    if b[0] != ACK_CODE || b[1..8].iter().any(|&x| x != 0) {
        return Err(StreamError::BadAck(format!("{:02x?}", &b[..8])));
    }
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[8..16]);
    Ok(u64::from_le_bytes(w))
}

/// The host's request: output of `app` from offset `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub app: String,
    pub from: u64,
}

impl fmt::Display for Request {
    /// The request line, without its newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{REQUEST_VERB} {} {}", self.app, self.from)
    }
}

impl Request {
    /// Parses a request line (with or without its newline). App names are
    /// checked by the agent against the pod's apps.
    pub fn parse(line: &str) -> Result<Request, StreamError> {
        let bad = || StreamError::BadRequest(line.trim_end().to_string());
        let mut words = line.trim_end_matches(['\n', '\r']).split(' ');
        if words.next() != Some(REQUEST_VERB) {
            return Err(bad());
        }
        let app = words.next().filter(|a| !a.is_empty()).ok_or_else(bad)?;
        let from = words.next().and_then(|o| o.parse().ok()).ok_or_else(bad)?;
        if words.next().is_some() {
            return Err(bad());
        }
        Ok(Request {
            app: app.to_string(),
            from,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let h = FrameHeader {
            kind: FrameKind::Data,
            stream: StreamId::Stderr,
            len: 4096,
            offset: 1 << 40,
            boottime_ns: 123_456_789,
            count: 0,
        };
        assert_eq!(FrameHeader::decode(&h.encode()).unwrap(), h);
        let d = FrameHeader {
            kind: FrameKind::Dropped,
            len: 0,
            count: 77,
            ..h
        };
        assert_eq!(FrameHeader::decode(&d.encode()).unwrap(), d);
    }

    #[test]
    fn bad_frames_are_refused() {
        let mut b = FrameHeader {
            kind: FrameKind::End,
            stream: StreamId::Stdout,
            len: 0,
            offset: 5,
            boottime_ns: 0,
            count: 0,
        }
        .encode();
        b[0] = 9;
        assert!(FrameHeader::decode(&b).is_err());
        b[0] = 3;
        b[4] = 1; // an End frame with data
        assert!(FrameHeader::decode(&b).is_err());
        b[0] = 1;
        b[4..8].copy_from_slice(&(MAX_FRAME_DATA as u32 + 1).to_le_bytes());
        assert!(FrameHeader::decode(&b).is_err());
    }

    #[test]
    fn acks_and_requests_round_trip() {
        assert_eq!(decode_ack(&encode_ack(42)).unwrap(), 42);
        let mut bad = encode_ack(1);
        bad[3] = 1;
        assert!(decode_ack(&bad).is_err());
        let r = Request {
            app: "web".into(),
            from: 1024,
        };
        assert_eq!(Request::parse(&format!("{r}\n")).unwrap(), r);
        for bad in [
            "",
            "LOGS\n",
            "LOGS web\n",
            "LOGS web x\n",
            "GET web 1\n",
            "LOGS web 1 2\n",
        ] {
            assert!(Request::parse(bad).is_err(), "{bad:?}");
        }
    }
}
