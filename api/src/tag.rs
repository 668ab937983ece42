//! 9p mount tags for host volumes.
//!
//! A virtio-9p tag is at most 31 bytes (kvmtool refuses longer ones, and the
//! virtio config field is that small), while a volume name may be longer. The
//! tag is the name itself when it fits, else a prefix of the name and a hash
//! of the whole, so any valid volume name works and tags stay readable.

/// The longest tag the virtio-9p device accepts.
pub const MAX_TAG_LEN: usize = 31;

const PREFIX_LEN: usize = MAX_TAG_LEN - 1 - 16;

/// The 9p tag under which the host exports `volume`.
pub fn nine_p_tag(volume: &str) -> String {
    if volume.len() <= MAX_TAG_LEN {
        return volume.to_string();
    }
    let prefix: String = volume
        .chars()
        .filter(char::is_ascii)
        .take(PREFIX_LEN)
        .collect();
    format!("{prefix}-{:016x}", fnv1a64(volume.as_bytes()))
}

/// FNV-1a: stable across builds and platforms, unlike std's hasher.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_their_own_tag() {
        assert_eq!(nine_p_tag("data"), "data");
        let exact = "a".repeat(31);
        assert_eq!(nine_p_tag(&exact), exact);
    }

    #[test]
    fn long_names_get_a_bounded_distinct_stable_tag() {
        let a = nine_p_tag(&format!("{}-one", "x".repeat(40)));
        let b = nine_p_tag(&format!("{}-two", "x".repeat(40)));
        assert_eq!(a.len(), MAX_TAG_LEN);
        assert_eq!(b.len(), MAX_TAG_LEN);
        assert_ne!(a, b);
        assert!(a.starts_with("xxxxxxxxxxxxxx-"));
        assert_eq!(a, nine_p_tag(&format!("{}-one", "x".repeat(40))));
    }
}
