//! The manifest parser and validator on arbitrary input: they must refuse
//! with an error, never panic, and a manifest they accept must survive a
//! round trip through JSON unchanged.
#![no_main]

use kvmpod_api::manifest::{parse_mode, parse_size, PodManifest};
use kvmpod_api::tag::{nine_p_tag, MAX_TAG_LEN};
use kvmpod_api::validate::{check_acname, normalize_guest_path, parse, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_size(text);
    let _ = parse_mode(text);
    let _ = normalize_guest_path(text);
    let _ = check_acname(text);
    // Every volume name has a tag the virtio-9p device accepts; a short
    // name is its own tag, a long one an ASCII prefix and a hash.
    let tag = nine_p_tag(text);
    assert!(tag.len() <= MAX_TAG_LEN, "{tag:?} is too long");
    if text.len() <= MAX_TAG_LEN {
        assert_eq!(tag, text);
    } else {
        assert!(tag.is_ascii(), "{tag:?}");
    }
    let Ok(pod) = parse(text) else {
        return;
    };
    let errors = validate(&pod);
    for e in &errors {
        // Every refusal says what and where.
        assert!(!e.message.is_empty());
    }
    let json = serde_json::to_string(&pod).expect("a parsed manifest serialises");
    let again: PodManifest = serde_json::from_str(&json).expect("and parses again");
    assert_eq!(pod, again);
});
