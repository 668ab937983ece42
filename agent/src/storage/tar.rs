//! A minimal tar (ustar) writer and reader for `host-ctl cp`, instead of a
//! tar crate in PID 1: headers, their checksum, GNU (`L`, `K`) and PAX
//! (`x`: `path`, `linkpath`, `size`, `uid`, `gid`, `mtime`) records for
//! names and values that do not fit, and the padding between entries.
//! Names are bytes (paths need not be UTF-8). The reader checks nothing
//! about what names mean: the extractor refuses absolute names and `..`.

use std::io::{self, Read, Write};

use super::StorageError;

/// A tar block; headers and data padding are made of them.
pub(super) const BLOCK: usize = 512;
/// The longest name (and link target) a ustar header holds by itself.
const NAME_LEN: usize = 100;
/// The longest PAX extended header or GNU long name accepted.
const MAX_EXTENSION: u64 = 1 << 20;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    File,
    HardLink,
    Symlink,
    CharDevice,
    BlockDevice,
    Dir,
    Fifo,
    /// Any other type flag.
    Other(u8),
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::HardLink => b'1',
            Kind::Symlink => b'2',
            Kind::CharDevice => b'3',
            Kind::BlockDevice => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
            Kind::Other(f) => f,
        }
    }

    fn from_flag(f: u8) -> Kind {
        match f {
            b'0' | 0 | b'7' => Kind::File,
            b'1' => Kind::HardLink,
            b'2' => Kind::Symlink,
            b'3' => Kind::CharDevice,
            b'4' => Kind::BlockDevice,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            f => Kind::Other(f),
        }
    }

    /// What the kind is called in messages.
    pub(super) fn describe(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::HardLink => "hard link",
            Kind::Symlink => "symlink",
            Kind::CharDevice => "character device",
            Kind::BlockDevice => "block device",
            Kind::Dir => "directory",
            Kind::Fifo => "fifo",
            Kind::Other(_) => "entry of an unknown type",
        }
    }
}

/// One entry's header, long names and values resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub name: Vec<u8>,
    pub kind: Kind,
    /// Permission bits, setuid, setgid and sticky included.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Data bytes (regular files only).
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: u64,
    /// A symlink's (or hard link's) target.
    pub link: Vec<u8>,
    /// A device's numbers.
    pub dev: (u32, u32),
}

fn bad(why: impl Into<String>) -> StorageError {
    StorageError::Archive(why.into())
}

fn io_err(e: io::Error) -> StorageError {
    StorageError::ArchiveIo(e.to_string())
}

/// Writes an octal number in `field` (NUL-terminated), or in base-256
/// when it does not fit (as GNU tar does).
fn put_number(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    if digits >= 22 || v < 1u64 << (3 * digits) {
        let s = format!("{v:0digits$o}");
        field[..digits].copy_from_slice(s.as_bytes());
        field[digits] = 0;
    } else {
        // Big-endian, the top bit of the first byte marking it (an 8-byte
        // field holds 63 bits).
        field.fill(0);
        let n = field.len();
        field[n - 8..].copy_from_slice(&v.min(i64::MAX as u64).to_be_bytes());
        field[0] |= 0x80;
    }
}

fn get_number(field: &[u8], what: &str) -> Result<u64, StorageError> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // Base-256: a big-endian number under the marker bit.
        let mut v: u64 = 0;
        for (i, b) in field.iter().enumerate() {
            let b = if i == 0 { b & 0x7f } else { *b };
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| bad(format!("{what} out of range")))?;
        }
        return Ok(v);
    }
    let text = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| *b != 0 && *b != b' ');
    let mut v: u64 = 0;
    for b in text {
        if !(b'0'..=b'7').contains(&b) {
            return Err(bad(format!("{what} is not an octal number")));
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or_else(|| bad(format!("{what} out of range")))?;
    }
    Ok(v)
}

fn put_text(field: &mut [u8], text: &[u8]) {
    let n = text.len().min(field.len());
    field[..n].copy_from_slice(&text[..n]);
}

fn get_text(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    &field[..end]
}

fn checksum(h: &[u8; BLOCK]) -> u64 {
    h.iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum()
}

/// One ustar header block.
fn header_block(e: &Entry, name: &[u8], link: &[u8], flag: u8, size: u64) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    put_text(&mut h[0..100], name);
    put_number(&mut h[100..108], u64::from(e.mode & 0o7777));
    put_number(&mut h[108..116], e.uid);
    put_number(&mut h[116..124], e.gid);
    put_number(&mut h[124..136], size);
    put_number(&mut h[136..148], e.mtime);
    h[156] = flag;
    put_text(&mut h[157..257], link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if matches!(e.kind, Kind::CharDevice | Kind::BlockDevice) {
        put_number(&mut h[329..337], u64::from(e.dev.0));
        put_number(&mut h[337..345], u64::from(e.dev.1));
    }
    let sum = checksum(&h);
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// One PAX record: "<len> <key>=<value>\n", its length counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // space, '=', newline
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// Zeros after `size` data bytes up to the next block.
fn padding(size: u64) -> usize {
    (BLOCK - (size % BLOCK as u64) as usize) % BLOCK
}

/// Writes an entry's header (and a PAX header before it when a name or
/// target is too long); its data, if any, follows with [`write_data`].
pub(super) fn write_header<W: Write>(w: &mut W, e: &Entry) -> Result<(), StorageError> {
    let mut pax = Vec::new();
    if e.name.len() > NAME_LEN {
        pax.extend(pax_record("path", &e.name));
    }
    if e.link.len() > NAME_LEN {
        pax.extend(pax_record("linkpath", &e.link));
    }
    if !pax.is_empty() {
        let x = Entry {
            mode: 0o644,
            ..e.clone()
        };
        let h = header_block(&x, b"././@PaxHeader", b"", b'x', pax.len() as u64);
        w.write_all(&h).map_err(io_err)?;
        w.write_all(&pax).map_err(io_err)?;
        w.write_all(&[0u8; BLOCK][..padding(pax.len() as u64)])
            .map_err(io_err)?;
    }
    let size = if e.kind == Kind::File { e.size } else { 0 };
    let h = header_block(e, &e.name, &e.link, e.kind.flag(), size);
    w.write_all(&h).map_err(io_err)
}

/// Copies exactly `size` bytes of `from` after a header, then the
/// padding: a file that shrank while it was read is padded with zeros, one
/// that grew is cut, so the archive stays well formed.
pub(super) fn write_data<W: Write, R: Read>(
    w: &mut W,
    from: &mut R,
    size: u64,
) -> Result<(), StorageError> {
    let copied = io::copy(&mut from.take(size), w).map_err(io_err)?;
    let mut missing = size - copied;
    let zeros = [0u8; 8192];
    while missing > 0 {
        let n = missing.min(zeros.len() as u64) as usize;
        w.write_all(&zeros[..n]).map_err(io_err)?;
        missing -= n as u64;
    }
    w.write_all(&zeros[..padding(size)]).map_err(io_err)
}

/// Ends an archive: two zero blocks.
pub(super) fn finish<W: Write>(w: &mut W) -> Result<(), StorageError> {
    w.write_all(&[0u8; 2 * BLOCK]).map_err(io_err)?;
    w.flush().map_err(io_err)
}

/// Reads the entries of an archive in turn.
pub(super) struct Reader<R> {
    r: R,
    /// Data bytes (and padding) of the current entry not read yet.
    left: u64,
    pad: usize,
}

impl<R: Read> Reader<R> {
    pub(super) fn new(r: R) -> Self {
        Reader { r, left: 0, pad: 0 }
    }

    fn block(&mut self) -> Result<[u8; BLOCK], StorageError> {
        let mut b = [0u8; BLOCK];
        self.r.read_exact(&mut b).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                bad("truncated archive")
            } else {
                io_err(e)
            }
        })?;
        Ok(b)
    }

    /// Skips what is left of the current entry's data.
    fn skip(&mut self) -> Result<(), StorageError> {
        let n = io::copy(&mut (&mut self.r).take(self.left), &mut io::sink()).map_err(io_err)?;
        if n != self.left {
            return Err(bad("truncated archive"));
        }
        self.left = 0;
        let mut pad = [0u8; BLOCK];
        let pad_len = self.pad;
        self.pad = 0;
        self.r
            .read_exact(&mut pad[..pad_len])
            .map_err(|_| bad("truncated archive"))
    }

    /// The body of an extension header (a PAX header or a GNU long name).
    fn extension(&mut self, size: u64) -> Result<Vec<u8>, StorageError> {
        if size > MAX_EXTENSION {
            return Err(bad(format!("an extended header of {size} bytes")));
        }
        let mut body = vec![0u8; size as usize];
        self.r
            .read_exact(&mut body)
            .map_err(|_| bad("truncated archive"))?;
        let mut pad = [0u8; BLOCK];
        self.r
            .read_exact(&mut pad[..padding(size)])
            .map_err(|_| bad("truncated archive"))?;
        Ok(body)
    }

    /// The next entry; None at the archive's end (a zero block).
    pub(super) fn next_entry(&mut self) -> Result<Option<Entry>, StorageError> {
        self.skip()?;
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut long_name = None;
        let mut long_link = None;
        loop {
            let h = self.block()?;
            if h.iter().all(|b| *b == 0) {
                return Ok(None);
            }
            let stored = get_number(&h[148..156], "checksum")?;
            if stored != checksum(&h) {
                return Err(bad("bad header checksum"));
            }
            let size = get_number(&h[124..136], "size")?;
            match h[156] {
                b'x' => pax.extend(parse_pax(&self.extension(size)?)?),
                b'g' => drop(self.extension(size)?),
                b'L' => long_name = Some(trim_nul(self.extension(size)?)),
                b'K' => long_link = Some(trim_nul(self.extension(size)?)),
                flag => {
                    let mut e = self.entry(&h, flag)?;
                    if let Some(n) = long_name {
                        e.name = n;
                    }
                    if let Some(l) = long_link {
                        e.link = l;
                    }
                    for (key, value) in pax {
                        apply_pax(&mut e, &key, value)?;
                    }
                    if e.kind != Kind::File {
                        e.size = 0;
                    }
                    self.left = e.size;
                    self.pad = padding(e.size);
                    return Ok(Some(e));
                }
            }
        }
    }

    fn entry(&self, h: &[u8; BLOCK], flag: u8) -> Result<Entry, StorageError> {
        let mut name = get_text(&h[0..100]).to_vec();
        if &h[257..262] == b"ustar" && h[345] != 0 {
            // A ustar prefix: "prefix/name".
            let mut full = get_text(&h[345..500]).to_vec();
            full.push(b'/');
            full.extend_from_slice(&name);
            name = full;
        }
        let kind = Kind::from_flag(flag);
        Ok(Entry {
            name,
            kind,
            mode: (get_number(&h[100..108], "mode")? & 0o7777) as u32,
            uid: get_number(&h[108..116], "uid")?,
            gid: get_number(&h[116..124], "gid")?,
            size: get_number(&h[124..136], "size")?,
            mtime: get_number(&h[136..148], "mtime")?,
            link: get_text(&h[157..257]).to_vec(),
            dev: (
                get_number(&h[329..337], "device major")? as u32,
                get_number(&h[337..345], "device minor")? as u32,
            ),
        })
    }

    /// Copies the current entry's data to `w`.
    pub(super) fn data_to<W: Write>(&mut self, w: &mut W) -> Result<(), StorageError> {
        let n = io::copy(&mut (&mut self.r).take(self.left), w).map_err(io_err)?;
        if n != self.left {
            return Err(bad("truncated archive"));
        }
        self.left = 0;
        self.skip()
    }
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

fn parse_pax(mut body: &[u8]) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let space = body
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(|| bad("bad PAX record"))?;
        let len: usize = std::str::from_utf8(&body[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|n| *n > space + 1 && *n <= body.len())
            .ok_or_else(|| bad("bad PAX record length"))?;
        let record = &body[space + 1..len];
        let record = record
            .strip_suffix(b"\n")
            .ok_or_else(|| bad("bad PAX record"))?;
        let eq = record
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| bad("bad PAX record"))?;
        let key = String::from_utf8_lossy(&record[..eq]).into_owned();
        out.push((key, record[eq + 1..].to_vec()));
        body = &body[len..];
    }
    Ok(out)
}

fn apply_pax(e: &mut Entry, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
    let number = |v: &[u8]| -> Result<u64, StorageError> {
        // mtime may have a fraction: whole seconds are kept.
        let text = String::from_utf8_lossy(v);
        let whole = text.split('.').next().unwrap_or("");
        whole
            .parse()
            .map_err(|_| bad(format!("PAX {key} {text:?} is not a number")))
    };
    match key {
        "path" => e.name = value,
        "linkpath" => e.link = value,
        "size" => e.size = number(&value)?,
        "uid" => e.uid = number(&value)?,
        "gid" => e.gid = number(&value)?,
        "mtime" => e.mtime = number(&value)?,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, kind: Kind) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            kind,
            mode: 0o4755,
            uid: 1000,
            gid: 100,
            size: 0,
            mtime: 1_700_000_000,
            link: Vec::new(),
            dev: (0, 0),
        }
    }

    fn archive(entries: &[(Entry, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (e, data) in entries {
            write_header(&mut out, e).unwrap();
            if e.kind == Kind::File {
                write_data(&mut out, &mut &data[..], e.size).unwrap();
            }
        }
        finish(&mut out).unwrap();
        out
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<(Entry, Vec<u8>)>, StorageError> {
        let mut r = Reader::new(bytes);
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            let mut data = Vec::new();
            r.data_to(&mut data)?;
            out.push((e, data));
        }
        Ok(out)
    }

    fn sample() -> Vec<(Entry, Vec<u8>)> {
        let long = format!("d/{}/{}", "a".repeat(90), "b".repeat(90));
        let mut file = entry("d/file", Kind::File);
        file.size = 1500;
        let mut big_uid = entry(&long, Kind::File);
        big_uid.uid = 1 << 40;
        big_uid.size = 3;
        let mut link = entry("d/link", Kind::Symlink);
        link.link = format!("../{}", "c".repeat(150)).into_bytes();
        link.mode = 0o777;
        vec![
            (entry("d/", Kind::Dir), Vec::new()),
            (file, (0..1500u32).map(|i| i as u8).collect()),
            (big_uid, b"xyz".to_vec()),
            (link, Vec::new()),
        ]
    }

    #[test]
    fn round_trip_with_long_names_and_large_numbers() {
        let entries = sample();
        let bytes = archive(&entries);
        assert_eq!(bytes.len() % BLOCK, 0);
        assert_eq!(read_all(&bytes).unwrap(), entries);
        // Entries can be skipped without reading their data.
        let mut r = Reader::new(&bytes[..]);
        let mut names = Vec::new();
        while let Some(e) = r.next_entry().unwrap() {
            names.push(e.name.len());
        }
        assert_eq!(names.len(), 4);
    }

    #[test]
    fn headers_are_ustar() {
        let bytes = archive(&sample());
        assert_eq!(&bytes[257..263], b"ustar\0");
        assert_eq!(bytes[156], b'5');
        let first: &[u8; BLOCK] = bytes[..BLOCK].try_into().unwrap();
        let sum = format!("{:06o}\0", checksum(first));
        assert_eq!(&bytes[148..155], sum.as_bytes());
        // The long name and target went into a PAX header.
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains(" path=d/aaaa"), "no PAX path");
        assert!(text.contains(" linkpath=../cccc"), "no PAX linkpath");
    }

    #[test]
    fn gnu_long_names_and_prefixes_are_read() {
        let mut bytes = Vec::new();
        let long = "x/".repeat(80) + "end";
        let mut l = entry("././@LongLink", Kind::Other(b'L'));
        l.mode = 0;
        let h = header_block(&l, b"././@LongLink", b"", b'L', long.len() as u64 + 1);
        bytes.extend_from_slice(&h);
        let mut body = long.clone().into_bytes();
        body.push(0);
        write_data(&mut bytes, &mut &body[..], body.len() as u64).unwrap();
        write_header(&mut bytes, &entry("short", Kind::Dir)).unwrap();
        let mut prefixed = header_block(&entry("name", Kind::Dir), b"name", b"", b'5', 0);
        put_text(&mut prefixed[345..500], b"some/prefix");
        let sum = checksum(&prefixed);
        prefixed[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        bytes.extend_from_slice(&prefixed);
        finish(&mut bytes).unwrap();
        let got = read_all(&bytes).unwrap();
        assert_eq!(got[0].0.name, long.as_bytes());
        assert_eq!(got[1].0.name, b"some/prefix/name");
    }

    #[test]
    fn truncated_and_corrupt_archives_are_errors() {
        let bytes = archive(&sample());
        for cut in [100, BLOCK, BLOCK + 700, bytes.len() - 2 * BLOCK - 1] {
            let e = read_all(&bytes[..cut]).unwrap_err();
            assert_eq!(
                e,
                StorageError::Archive("truncated archive".into()),
                "{cut}"
            );
        }
        // Without its end blocks, an archive is truncated as well.
        assert!(read_all(&bytes[..bytes.len() - 2 * BLOCK]).is_err());
        let mut corrupt = bytes.clone();
        corrupt[10] ^= 1;
        let e = read_all(&corrupt).unwrap_err();
        assert_eq!(e, StorageError::Archive("bad header checksum".into()));
    }

    #[test]
    fn pax_records_count_their_own_length() {
        for n in [0, 1, 5, 90, 95, 96, 97, 995, 996, 1000] {
            let r = pax_record("path", &vec![b'a'; n]);
            let len: usize = String::from_utf8_lossy(&r)
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, r.len(), "{n}");
            assert_eq!(parse_pax(&r).unwrap(), vec![("path".into(), vec![b'a'; n])]);
        }
    }
}
