//! Decompressing what distributions compress: kernel modules (`.ko.xz`,
//! `.ko.zst`, `.ko.gz`) and the kernel image's payload.

use std::io::{self, Read};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Gzip,
    /// xz, including the BCJ filters kernel images use.
    Xz,
    Zstd,
}

impl Codec {
    /// Recognises a compressed stream by its magic bytes.
    pub fn sniff(bytes: &[u8]) -> Option<Codec> {
        if bytes.starts_with(&[0x1f, 0x8b]) {
            Some(Codec::Gzip)
        } else if bytes.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Some(Codec::Xz)
        } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Codec::Zstd)
        } else {
            None
        }
    }

    /// Decompresses the first stream in `bytes` (trailing bytes, such as
    /// the size the kernel build appends, are ignored).
    pub fn decompress(self, bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(bytes.len() * 4);
        match self {
            Codec::Gzip => {
                flate2::read::GzDecoder::new(bytes).read_to_end(&mut out)?;
            }
            Codec::Xz => {
                liblzma::read::XzDecoder::new(bytes).read_to_end(&mut out)?;
            }
            Codec::Zstd => {
                ruzstd::decoding::StreamingDecoder::new(bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
                    .read_to_end(&mut out)?;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn compress(codec: Codec, data: &[u8]) -> Vec<u8> {
        match codec {
            Codec::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Codec::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Codec::Zstd => {
                ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
            }
        }
    }

    #[test]
    fn every_codec_round_trips_and_is_recognised() {
        let data = b"kernel bytes ".repeat(100);
        for codec in [Codec::Gzip, Codec::Xz, Codec::Zstd] {
            let mut packed = compress(codec, &data);
            assert_eq!(Codec::sniff(&packed), Some(codec));
            // The kernel build appends the uncompressed size.
            packed.extend_from_slice(&(data.len() as u32).to_le_bytes());
            assert_eq!(codec.decompress(&packed).unwrap(), data, "{codec:?}");
        }
        assert_eq!(Codec::sniff(b"\x7fELF"), None);
        assert!(Codec::Xz.decompress(b"\xfd7zXZ\x00garbage").is_err());
    }
}
