//! Detach keys: a key sequence that leaves an attached session without
//! touching the app, written as docker and podman take it (`ctrl-p,ctrl-q`,
//! their default; `ctrl-a,d`; an empty string turns detaching off). Keys
//! typed that begin the sequence are held back until it completes (then
//! dropped) or breaks (then sent, in order), so nothing typed is lost.

/// The sequence, and how much of it was typed so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachKeys {
    seq: Vec<u8>,
    matched: usize,
}

/// docker's and podman's default.
pub const DEFAULT: &str = "ctrl-p,ctrl-q";

impl DetachKeys {
    /// `spec` parsed; `None` for an empty one (no detaching).
    pub fn parse(spec: &str) -> Result<Option<DetachKeys>, String> {
        if spec.is_empty() {
            return Ok(None);
        }
        let seq = spec.split(',').map(key).collect::<Result<Vec<u8>, _>>()?;
        Ok(Some(DetachKeys { seq, matched: 0 }))
    }

    /// Takes typed `input`: what to send on now, and whether the
    /// sequence has just been completed (what follows it in `input` is
    /// not for the app).
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if b == self.seq[self.matched] {
                self.matched += 1;
            } else {
                // The held keys were typed for the app after all.
                out.extend_from_slice(&self.seq[..self.matched]);
                self.matched = usize::from(b == self.seq[0]);
                if self.matched == 0 {
                    out.push(b);
                }
            }
            if self.matched == self.seq.len() {
                self.matched = 0;
                return (out, true);
            }
        }
        (out, false)
    }
}

/// One key: `ctrl-<c>` for a control character, or a single character.
fn key(k: &str) -> Result<u8, String> {
    let bad =
        || format!("{k:?} is not a key: give ctrl-<a-z, @, [, \\, ], ^ or _>, or one character");
    if let Some(c) = k.strip_prefix("ctrl-") {
        let &[c] = c.as_bytes() else {
            return Err(bad());
        };
        return match c.to_ascii_lowercase() {
            b'a'..=b'z' => Ok(c.to_ascii_lowercase() - b'a' + 1),
            b'@' => Ok(0),
            b'[' => Ok(27),
            b'\\' => Ok(28),
            b']' => Ok(29),
            b'^' => Ok(30),
            b'_' => Ok(31),
            _ => Err(bad()),
        };
    }
    match k.as_bytes() {
        &[c] if c.is_ascii() => Ok(c),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_s_spellings_are_understood() {
        let k = DetachKeys::parse(DEFAULT).unwrap().unwrap();
        assert_eq!(k.seq, [0x10, 0x11]);
        let k = DetachKeys::parse("ctrl-a,d").unwrap().unwrap();
        assert_eq!(k.seq, [0x01, b'd']);
        assert_eq!(DetachKeys::parse("ctrl-[").unwrap().unwrap().seq, [27]);
        assert_eq!(DetachKeys::parse("").unwrap(), None);
        assert!(DetachKeys::parse("ctrl-1")
            .unwrap_err()
            .contains("not a key"));
        assert!(DetachKeys::parse("ctrl-p,,ctrl-q").is_err());
        assert!(DetachKeys::parse("ab").is_err());
    }

    #[test]
    fn the_sequence_detaches_and_anything_else_reaches_the_app() {
        let mut k = DetachKeys::parse(DEFAULT).unwrap().unwrap();
        assert_eq!(k.feed(b"ls\n"), (b"ls\n".to_vec(), false));
        // Held across reads, then dropped with what follows.
        assert_eq!(k.feed(b"echo\x10"), (b"echo".to_vec(), false));
        assert_eq!(k.feed(b"\x11rest"), (Vec::new(), true));
        // A broken sequence is sent as typed, in order.
        assert_eq!(k.feed(b"\x10x"), (b"\x10x".to_vec(), false));
        assert_eq!(k.feed(b"\x10\x10\x11"), (b"\x10".to_vec(), true));
        let mut one = DetachKeys::parse("ctrl-]").unwrap().unwrap();
        assert_eq!(one.feed(b"a\x1db"), (b"a".to_vec(), true));
    }
}
