//! The manifest parser and validator on arbitrary input: they must refuse
//! with an error, never panic, and a manifest they accept must survive a
//! round trip through JSON unchanged.
#![no_main]

use kvmpod_api::manifest::{parse_mode, parse_size, PodManifest};
use kvmpod_api::tag::nine_p_tag;
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
    assert!(nine_p_tag(text).len() <= 31 || text.len() <= 31);
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
