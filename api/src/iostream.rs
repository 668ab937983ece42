//! The io stream: how `host-ctl exec` and `host-ctl attach` carry stdin,
//! stdout and stderr, on a vsock connection of their own (port
//! [`crate::layout::IO_VSOCK_PORT`]) rather than as one RPC message per
//! chunk. One connection is one session: large frames with a small fixed
//! header, and no protobuf on the data path.
//!
//! ```text
//! host → agent   EXEC <json>\n  or  ATTACH <app>\n  or  COPYOUT <json>\n  or  COPYIN <json>\n
//! agent → host   OK\n  or  ERR <why>\n
//! host → agent   input frames:  stdin, close stdin, resize, signal
//! agent → host   output frames: stdout, stderr, and last the exit
//! ```
//!
//! Every frame is a 16-byte header, then `len` bytes of data (stdin,
//! stdout and stderr frames only). The exec request travels as JSON in the
//! request line, not as an RPC that returns a session id: one connection
//! and one round trip start a command, and the agent keeps no sessions
//! that a host might never come back for.
//!
//! `host-ctl cp` uses the same frames: for `COPYOUT` the agent sends a tar
//! archive of the path as stdout frames, then an exit frame (code 0, or a
//! message on stderr and a non-zero code); for `COPYIN` the host sends a
//! tar archive as stdin frames, then [`Input::CloseStdin`], and the agent
//! extracts it into the directory named and answers with an exit frame.
//!
//! The host never half-closes: end of stdin is a [`Input::CloseStdin`]
//! frame, so the agent reads end of file only when the host is gone, and
//! then kills an exec'd command (an attached app keeps running).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::manifest::EnvVar;

/// The exec request line's verb.
pub const EXEC_VERB: &str = "EXEC";
/// The attach request line's verb.
pub const ATTACH_VERB: &str = "ATTACH";

/// The copy-out request line's verb.
pub const COPY_OUT_VERB: &str = "COPYOUT";
/// The copy-in request line's verb.
pub const COPY_IN_VERB: &str = "COPYIN";

/// The longest request line the agent reads: room for the agent's limit
/// on a command's arguments and environment (256 KiB), escaped.
pub const MAX_REQUEST_LINE: usize = 1 << 20;

/// The longest data payload of one frame.
pub const MAX_FRAME_DATA: usize = 1 << 20;

/// Size of an encoded frame header.
pub const HEADER_LEN: usize = 16;

/// A terminal's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

/// What to run, where, and how (`host-ctl exec`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecRequest {
    /// The app in whose root, with whose environment and user, to run.
    pub app: String,
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Added to (or overriding) the app's environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Run on a pseudo-terminal (stdout and stderr are then one stream).
    #[serde(default)]
    pub tty: bool,
    /// Feed the host's stdin; without it stdin is `/dev/null`.
    #[serde(default)]
    pub interactive: bool,
    /// The terminal's initial size (with `tty`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<WindowSize>,
    /// Run as this user, a name or number in the app's root, instead of
    /// the app's own (`docker exec --user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Run with this group instead of the user's (with `user`) or the
    /// app's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Start in this absolute directory of the app's root instead of the
    /// app's working directory (`docker exec --workdir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
}

/// Where a copy goes to or comes from (`host-ctl cp`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyRequest {
    /// The app in whose root the path is.
    pub app: String,
    /// An absolute path in the app's root: what is archived (copy out);
    /// for copy in, the existing directory the archive is extracted into,
    /// or a new name, in an existing directory, for the archive's one top
    /// entry (as `docker cp` gives a copy a new name).
    pub path: String,
}

/// What a connection asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Run a command in a running app.
    Exec(ExecRequest),
    /// Follow an app's output from now on, and feed its stdin (apps with
    /// `"stdin": true`).
    Attach { app: String },
    /// Send a tar archive of a path of an app's root.
    CopyOut(CopyRequest),
    /// Extract the tar archive the host sends into a directory of an
    /// app's root.
    CopyIn(CopyRequest),
}

/// What is wrong with bytes read from the other side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IoStreamError {
    #[error("bad io stream request {line:?}: {why}")]
    BadRequest { line: String, why: String },
    #[error("bad io stream frame: {0}")]
    BadFrame(String),
    #[error("bad io stream reply {0:?}: expected \"OK\" or \"ERR <why>\"")]
    BadReply(String),
}

impl fmt::Display for Request {
    /// The request line, without its newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Exec(req) => {
                let json = serde_json::to_string(req).map_err(|_| fmt::Error)?;
                write!(f, "{EXEC_VERB} {json}")
            }
            Request::Attach { app } => write!(f, "{ATTACH_VERB} {app}"),
            Request::CopyOut(req) => {
                let json = serde_json::to_string(req).map_err(|_| fmt::Error)?;
                write!(f, "{COPY_OUT_VERB} {json}")
            }
            Request::CopyIn(req) => {
                let json = serde_json::to_string(req).map_err(|_| fmt::Error)?;
                write!(f, "{COPY_IN_VERB} {json}")
            }
        }
    }
}

impl Request {
    /// Parses a request line (with or without its newline). App names are
    /// checked by the agent against the pod's apps.
    pub fn parse(line: &str) -> Result<Request, IoStreamError> {
        let line = line.trim_end_matches(['\n', '\r']);
        let bad = |why: &str| IoStreamError::BadRequest {
            line: line.chars().take(80).collect(),
            why: why.to_string(),
        };
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        match verb {
            EXEC_VERB => serde_json::from_str(rest)
                .map(Request::Exec)
                .map_err(|e| bad(&e.to_string())),
            ATTACH_VERB if !rest.is_empty() && !rest.contains(' ') => Ok(Request::Attach {
                app: rest.to_string(),
            }),
            ATTACH_VERB => Err(bad("expected \"ATTACH <app>\"")),
            COPY_OUT_VERB | COPY_IN_VERB => {
                let req: CopyRequest =
                    serde_json::from_str(rest).map_err(|e| bad(&e.to_string()))?;
                if req.app.is_empty() || !req.path.starts_with('/') {
                    return Err(bad("a copy needs an app and an absolute path"));
                }
                Ok(if verb == COPY_OUT_VERB {
                    Request::CopyOut(req)
                } else {
                    Request::CopyIn(req)
                })
            }
            _ => Err(bad(
                "expected \"EXEC <json>\", \"ATTACH <app>\", \"COPYOUT <json>\" or \"COPYIN <json>\"",
            )),
        }
    }
}

/// The agent's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok,
    /// Refused; why, as the host shows it.
    Err(String),
}

impl fmt::Display for Reply {
    /// The reply line, without its newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Ok => f.write_str("OK"),
            Reply::Err(why) => write!(f, "ERR {}", why.replace('\n', " ")),
        }
    }
}

impl Reply {
    pub fn parse(line: &str) -> Result<Reply, IoStreamError> {
        let line = line.trim_end_matches(['\n', '\r']);
        if line == "OK" {
            return Ok(Reply::Ok);
        }
        match line.strip_prefix("ERR ") {
            Some(why) => Ok(Reply::Err(why.to_string())),
            None => Err(IoStreamError::BadReply(line.chars().take(80).collect())),
        }
    }
}

/// A frame from the host to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// `len` bytes for the command's (or app's) stdin follow.
    Stdin(u32),
    /// End of stdin.
    CloseStdin,
    /// The terminal's new size (exec with a terminal only).
    Resize(WindowSize),
    /// A signal for the command's process group (exec only).
    Signal(i32),
    /// The host leaves (its detach keys were typed): the command runs on,
    /// its output read and dropped, until it exits (exec only; attach
    /// just closes, the app's life being its own).
    Detach,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// The code, or 128 + signal.
    pub code: i32,
    /// The signal that ended it, 0 if it exited by itself.
    pub signal: i32,
}

/// A frame from the agent to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `len` bytes of stdout follow (the terminal's output, with a tty).
    Stdout(u32),
    /// `len` bytes of stderr follow.
    Stderr(u32),
    /// The last frame: the command (or app) ended, its output was all sent.
    Exit(ExitStatus),
}

// Kind codes: host-bound and guest-bound frames never share one, so a
// frame sent the wrong way is refused.
const STDIN: u8 = 0x01;
const CLOSE_STDIN: u8 = 0x02;
const RESIZE: u8 = 0x03;
const SIGNAL: u8 = 0x04;
const DETACH: u8 = 0x05;
const STDOUT: u8 = 0x81;
const STDERR: u8 = 0x82;
const EXIT: u8 = 0x83;

/// Layout: kind (1 byte), 3 zero bytes, `len` (u32), then two 32-bit
/// arguments; all little-endian.
fn header(kind: u8, len: u32, a: u32, b: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = kind;
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[8..12].copy_from_slice(&a.to_le_bytes());
    h[12..16].copy_from_slice(&b.to_le_bytes());
    h
}

/// A header's fields, checked for what every frame must respect.
struct Fields {
    kind: u8,
    len: u32,
    a: u32,
    b: u32,
}

impl Fields {
    fn read(h: &[u8; HEADER_LEN]) -> Result<Fields, IoStreamError> {
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        if h[1..4] != [0, 0, 0] {
            return Err(IoStreamError::BadFrame(format!(
                "reserved bytes {:02x?}",
                &h[1..4]
            )));
        }
        let f = Fields {
            kind: h[0],
            len: word(4),
            a: word(8),
            b: word(12),
        };
        if f.len as usize > MAX_FRAME_DATA {
            return Err(IoStreamError::BadFrame(format!(
                "{} bytes in one frame",
                f.len
            )));
        }
        Ok(f)
    }

    /// The data length of a data frame, which has no arguments.
    fn data(&self) -> Result<u32, IoStreamError> {
        self.args(0)?;
        Ok(self.len)
    }

    /// Checks that a frame without data has no more than `n` arguments.
    fn args(&self, n: usize) -> Result<(), IoStreamError> {
        let extra = match n {
            0 => self.a != 0 || self.b != 0,
            1 => self.b != 0,
            _ => false,
        };
        if extra || (self.len != 0 && !matches!(self.kind, STDIN | STDOUT | STDERR)) {
            return Err(IoStreamError::BadFrame(format!(
                "kind {:#04x} with unexpected length or arguments",
                self.kind
            )));
        }
        Ok(())
    }

    fn unknown(&self, way: &str) -> IoStreamError {
        IoStreamError::BadFrame(format!("kind {:#04x} is not a {way} frame", self.kind))
    }
}

impl Input {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        match *self {
            Input::Stdin(len) => header(STDIN, len, 0, 0),
            Input::CloseStdin => header(CLOSE_STDIN, 0, 0, 0),
            Input::Resize(s) => header(RESIZE, 0, s.rows.into(), s.cols.into()),
            Input::Signal(n) => header(SIGNAL, 0, n as u32, 0),
            Input::Detach => header(DETACH, 0, 0, 0),
        }
    }

    pub fn decode(h: &[u8; HEADER_LEN]) -> Result<Input, IoStreamError> {
        let f = Fields::read(h)?;
        let small = |v: u32| {
            u16::try_from(v).map_err(|_| IoStreamError::BadFrame(format!("window size {v}")))
        };
        match f.kind {
            STDIN => f.data().map(Input::Stdin),
            CLOSE_STDIN => f.args(0).map(|()| Input::CloseStdin),
            RESIZE => {
                f.args(2)?;
                Ok(Input::Resize(WindowSize {
                    rows: small(f.a)?,
                    cols: small(f.b)?,
                }))
            }
            SIGNAL => f.args(1).map(|()| Input::Signal(f.a as i32)),
            DETACH => f.args(0).map(|()| Input::Detach),
            _ => Err(f.unknown("host-to-agent")),
        }
    }
}

impl Output {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        match *self {
            Output::Stdout(len) => header(STDOUT, len, 0, 0),
            Output::Stderr(len) => header(STDERR, len, 0, 0),
            Output::Exit(x) => header(EXIT, 0, x.code as u32, x.signal as u32),
        }
    }

    pub fn decode(h: &[u8; HEADER_LEN]) -> Result<Output, IoStreamError> {
        let f = Fields::read(h)?;
        match f.kind {
            STDOUT => f.data().map(Output::Stdout),
            STDERR => f.data().map(Output::Stderr),
            EXIT => f.args(2).map(|()| {
                Output::Exit(ExitStatus {
                    code: f.a as i32,
                    signal: f.b as i32,
                })
            }),
            _ => Err(f.unknown("agent-to-host")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let size = WindowSize {
            rows: 50,
            cols: 132,
        };
        for i in [
            Input::Stdin(0),
            Input::Stdin(MAX_FRAME_DATA as u32),
            Input::CloseStdin,
            Input::Resize(size),
            Input::Signal(2),
            Input::Signal(-1),
            Input::Detach,
        ] {
            assert_eq!(Input::decode(&i.encode()).unwrap(), i);
        }
        for o in [
            Output::Stdout(4096),
            Output::Stderr(1),
            Output::Exit(ExitStatus { code: 3, signal: 0 }),
            Output::Exit(ExitStatus {
                code: 137,
                signal: 9,
            }),
            Output::Exit(ExitStatus {
                code: -1,
                signal: 0,
            }),
        ] {
            assert_eq!(Output::decode(&o.encode()).unwrap(), o);
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        // Each way refuses the other's frames.
        assert!(Input::decode(&Output::Stdout(1).encode()).is_err());
        assert!(Output::decode(&Input::Stdin(1).encode()).is_err());
        let mut h = Input::Stdin(1).encode();
        h[0] = 0x7f;
        assert!(Input::decode(&h).is_err());
        let mut h = Input::Stdin(1).encode();
        h[2] = 1;
        let e = Input::decode(&h).unwrap_err().to_string();
        assert!(e.contains("reserved"), "{e}");
        let too_big = Input::Stdin(MAX_FRAME_DATA as u32 + 1).encode();
        assert!(Input::decode(&too_big).is_err());
        // Data on a frame that carries none; arguments on one that has none.
        let mut h = Input::CloseStdin.encode();
        h[4] = 5;
        assert!(Input::decode(&h).is_err());
        let mut h = Output::Stdout(5).encode();
        h[8] = 1;
        assert!(Output::decode(&h).is_err());
        let mut h = Input::Signal(15).encode();
        h[12] = 1;
        assert!(Input::decode(&h).is_err());
        // A window size beyond what a terminal holds.
        let mut h = Input::Resize(WindowSize { rows: 1, cols: 1 }).encode();
        h[8..12].copy_from_slice(&70_000u32.to_le_bytes());
        assert!(Input::decode(&h).is_err());
    }

    #[test]
    fn requests_round_trip() {
        let exec = Request::Exec(ExecRequest {
            app: "web".into(),
            argv: vec!["sh".into(), "-c".into(), "echo \"hi\"\nexit 3".into()],
            env: vec![EnvVar {
                name: "A".into(),
                value: "b c".into(),
            }],
            tty: true,
            interactive: true,
            size: Some(WindowSize { rows: 24, cols: 80 }),
            user: Some("1000".into()),
            group: None,
            working_directory: Some("/srv".into()),
        });
        let line = format!("{exec}\n");
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert_eq!(Request::parse(&line).unwrap(), exec);
        let attach = Request::Attach { app: "db".into() };
        assert_eq!(attach.to_string(), "ATTACH db");
        assert_eq!(Request::parse("ATTACH db\n").unwrap(), attach);
        // Defaults: no env, no terminal, no stdin.
        let Request::Exec(min) = Request::parse(r#"EXEC {"app":"a","argv":["true"]}"#).unwrap()
        else {
            panic!("not an exec")
        };
        assert!(!min.tty && !min.interactive && min.env.is_empty() && min.size.is_none());
    }

    #[test]
    fn bad_requests_say_why() {
        for bad in [
            "",
            "EXEC",
            "EXEC {}",
            "EXEC {\"app\":\"a\"}",
            "EXEC {\"app\":\"a\",\"argv\":[],\"shell\":true}",
            "ATTACH",
            "ATTACH a b",
            "LOGS a 0",
        ] {
            assert!(Request::parse(bad).is_err(), "{bad:?}");
        }
        let e = Request::parse("GET /").unwrap_err().to_string();
        assert_eq!(
            e,
            "bad io stream request \"GET /\": expected \"EXEC <json>\", \"ATTACH <app>\", \"COPYOUT <json>\" or \"COPYIN <json>\""
        );
    }

    #[test]
    fn copy_requests_round_trip() {
        let req = CopyRequest {
            app: "web".into(),
            path: "/srv/a dir/\"quoted\"\nline".into(),
        };
        for r in [Request::CopyOut(req.clone()), Request::CopyIn(req.clone())] {
            let line = format!("{r}\n");
            assert_eq!(line.matches('\n').count(), 1, "{line}");
            assert_eq!(Request::parse(&line).unwrap(), r);
        }
        assert_eq!(
            Request::CopyOut(CopyRequest {
                app: "a".into(),
                path: "/x".into()
            })
            .to_string(),
            r#"COPYOUT {"app":"a","path":"/x"}"#
        );
        for bad in [
            "COPYOUT",
            "COPYIN {}",
            r#"COPYOUT {"app":"a"}"#,
            r#"COPYIN {"app":"a","path":"relative"}"#,
            r#"COPYIN {"app":"","path":"/"}"#,
            r#"COPYOUT {"app":"a","path":"/","mode":1}"#,
        ] {
            assert!(Request::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn replies_round_trip() {
        assert_eq!(Reply::parse("OK\n").unwrap(), Reply::Ok);
        let err = Reply::Err("no app named \"x\"\nin this pod".into());
        let line = err.to_string();
        assert_eq!(line, "ERR no app named \"x\" in this pod");
        assert_eq!(
            Reply::parse(&line).unwrap(),
            Reply::Err("no app named \"x\" in this pod".into())
        );
        assert!(Reply::parse("OKAY").is_err());
        assert!(Reply::parse("").is_err());
    }
}
