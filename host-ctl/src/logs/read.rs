//! Reading an app's log back, in order, across its rotated files
//! (`<app>.log.N` ... `.1`, then `<app>.log`), and then following what is
//! appended, even while the files rotate under the reader.
//!
//! The reader remembers the file it reads by identity (device and inode,
//! which a rename keeps) and its position in it; records already seen are
//! recognised by their offsets, so a rotation between two reads neither
//! hides nor repeats a record.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::store::{io, read_records};
use super::{LogError, LogFiles, LogRecord};

/// What a reader finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// The app's output before `offset` is no longer kept (rotated away);
    /// `time` is that of the first record still kept.
    RotatedAway {
        offset: u64,
        time: String,
    },
    Record(LogRecord),
}

/// A file's identity: it survives the renames of rotation.
type FileId = (u64, u64);

/// An open log file.
struct Open {
    id: FileId,
    file: File,
    path: PathBuf,
}

/// Reads an app's records from the oldest kept, then what follows.
pub struct Follower {
    files: LogFiles,
    /// The file being read and the position after its last whole record.
    at: Option<(FileId, u64)>,
    /// Where the output continues after the last record handed out.
    next: u64,
}

impl Follower {
    pub fn new(files: LogFiles) -> Self {
        Follower {
            files,
            at: None,
            next: 0,
        }
    }

    /// Opens the files newest first, down to the one being read: a file
    /// rotated meanwhile is found again under its next name (and is
    /// skipped the second time).
    fn open(&self) -> Result<Vec<Open>, LogError> {
        let mut open: Vec<Open> = Vec::new();
        for path in std::iter::once(&self.files.current).chain(&self.files.rotated) {
            let file = match File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("opening", path)(e)),
            };
            let meta = file.metadata().map_err(io("reading", path))?;
            let id = (meta.dev(), meta.ino());
            if open.iter().any(|o| o.id == id) {
                continue;
            }
            let reached = self.at.is_some_and(|(at, _)| at == id);
            open.push(Open {
                id,
                file,
                path: path.clone(),
            });
            if reached {
                break;
            }
        }
        open.reverse();
        Ok(open)
    }

    /// Hands `each` every record written since the last call (all of them
    /// the first time), oldest first, with a note where output is missing
    /// because it was rotated away.
    pub fn poll(&mut self, each: &mut dyn FnMut(Item)) -> Result<(), LogError> {
        let open = self.open()?;
        let (first, from) = match self.at {
            Some((id, pos)) => open
                .iter()
                .position(|o| o.id == id)
                .map_or((0, 0), |i| (i, pos)),
            None => (0, 0),
        };
        for (i, o) in open.iter().enumerate().skip(first) {
            let from = if i == first { from } else { 0 };
            let next = &mut self.next;
            let pos = read_records(&o.file, &o.path, from, &mut |r| {
                if r.end() <= *next {
                    return; // seen before a rotation
                }
                if r.start() > *next {
                    each(Item::RotatedAway {
                        offset: r.start(),
                        time: r.time.clone(),
                    });
                }
                *next = r.end();
                each(Item::Record(r));
            })?;
            self.at = Some((o.id, pos));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::store::tests::files;
    use crate::logs::{Rotation, Stream, Writer};
    use std::time::SystemTime;

    fn collect(f: &mut Follower) -> (Vec<u64>, Vec<u64>) {
        let (mut offsets, mut gaps) = (Vec::new(), Vec::new());
        f.poll(&mut |i| match i {
            Item::Record(r) => offsets.push(r.offset),
            Item::RotatedAway { offset, .. } => gaps.push(offset),
        })
        .unwrap();
        (offsets, gaps)
    }

    #[test]
    fn a_follower_reads_across_rotations_without_loss_or_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path(), "web", 3);
        let rot = Rotation {
            max_size: 300,
            max_files: 3,
        };
        let mut w = Writer::open(&f, rot).unwrap();
        let mut reader = Follower::new(f.clone());
        let line = [b'l'; 99];
        let mut seen = Vec::new();
        // Rotating at every record (each is ~170 bytes), read between some
        // writes: every record once, in order.
        for i in 0..12u64 {
            let mut data = line.to_vec();
            data.push(b'\n');
            w.push_data(SystemTime::now(), Stream::Stdout, &data)
                .unwrap();
            w.flush().unwrap();
            if i % 3 == 2 {
                let (offsets, gaps) = collect(&mut reader);
                assert!(gaps.is_empty(), "{gaps:?}");
                seen.extend(offsets);
            }
        }
        assert_eq!(seen, (0..12).map(|i| i * 100).collect::<Vec<_>>());

        // A reader that starts now finds the oldest output gone, and says
        // where what is kept begins.
        let mut late = Follower::new(f.clone());
        let (offsets, gaps) = collect(&mut late);
        assert_eq!(gaps, [offsets[0]]);
        assert!(offsets[0] > 0);
        assert_eq!(*offsets.last().unwrap(), 1100);

        // A reader left behind by more rotations than there are files
        // skips to what is kept, with a note.
        for _ in 0..10 {
            w.push_data(SystemTime::now(), Stream::Stdout, &[b'm'; 100])
                .unwrap();
            w.flush().unwrap();
        }
        let (offsets, gaps) = collect(&mut late);
        assert_eq!(gaps, [offsets[0]]);
        assert!(offsets[0] > 1200);
        assert_eq!(*offsets.last().unwrap(), 2100);
        assert_eq!(collect(&mut late), (vec![], vec![]));
    }
}
