//! Image names: `busybox`, `busybox:latest` and `docker.io/library/busybox`
//! all mean the same image, so names are stored normalised (`busybox:latest`)
//! and references normalised the same way before they are compared.

use super::error::ImageError;

const DEFAULT_TAG: &str = "latest";

/// The canonical form of an image name: an explicit tag (`:latest` when
/// none), and Docker Hub's implicit prefixes dropped.
pub fn normalize(reference: &str) -> Result<String, ImageError> {
    let bad = |reason: &str| ImageError::BadReference {
        reference: reference.to_string(),
        reason: reason.to_string(),
    };
    if reference.contains('@') {
        return Err(bad(
            "digest references are not names; use the digest alone (sha256:...)",
        ));
    }
    let (name, tag) = split_tag(reference);
    let tag = tag.unwrap_or(DEFAULT_TAG);
    if !valid_tag(tag) {
        return Err(bad(
            "a tag is 1 to 128 of [A-Za-z0-9_.-], not starting with . or -",
        ));
    }
    let name = name
        .strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name);
    if name.is_empty() || name.split('/').any(str::is_empty) {
        return Err(bad("empty name component"));
    }
    let mut components = name.split('/');
    let first = components.next().unwrap_or_default();
    let has_registry = name.contains('/') && (first.contains(['.', ':']) || first == "localhost");
    if has_registry && !valid_registry(first) {
        return Err(bad("invalid registry host"));
    }
    let path_start = usize::from(has_registry);
    if !name.split('/').skip(path_start).all(valid_path_component) {
        return Err(bad(
            "name components are lowercase letters, digits and . _ -",
        ));
    }
    Ok(format!("{name}:{tag}"))
}

/// Splits `name[:tag]`; the tag is after a colon in the last path component
/// (a colon before a slash is a registry port).
pub fn split_tag(reference: &str) -> (&str, Option<&str>) {
    let last = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last..].rfind(':') {
        Some(i) => (&reference[..last + i], Some(&reference[last + i + 1..])),
        None => (reference, None),
    }
}

/// True when `reference` names a tag explicitly.
pub fn has_tag(reference: &str) -> bool {
    split_tag(reference).1.is_some()
}

/// An OCI `ref.name` annotation that is only a tag (`latest`, `1.36`), as
/// opposed to a full reference (`busybox:latest`, `quay.io/x/y`).
pub fn is_bare_tag(s: &str) -> bool {
    !s.contains(['/', ':']) && valid_tag(s)
}

fn valid_tag(tag: &str) -> bool {
    let first_ok = tag
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    first_ok
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_path_component(c: &str) -> bool {
    let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    edge_ok(c.bytes().next())
        && edge_ok(c.bytes().last())
        && c.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

fn valid_registry(host: &str) -> bool {
    let (name, port) = match host.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    port_ok
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
}

/// What a `resolve` reference can mean besides a name.
#[derive(Debug, PartialEq, Eq)]
pub enum DigestRef<'a> {
    /// `sha256:<64 hex>`.
    Full(&'a str),
    /// At least 4 hex digits (with or without `sha256:`).
    Prefix(&'a str),
}

/// The reference read as a manifest digest or digest prefix, if it can be.
pub fn as_digest(reference: &str) -> Option<DigestRef<'_>> {
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    let is_hex = hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !is_hex || hex.len() < 4 || hex.len() > 64 {
        return None;
    }
    if hex.len() == 64 {
        return Some(DigestRef::Full(hex));
    }
    Some(DigestRef::Prefix(hex))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_a_tag_and_lose_docker_hub_prefixes() {
        assert_eq!(normalize("busybox").unwrap(), "busybox:latest");
        assert_eq!(normalize("busybox:latest").unwrap(), "busybox:latest");
        assert_eq!(normalize("busybox:1.36").unwrap(), "busybox:1.36");
        assert_eq!(
            normalize("docker.io/library/busybox").unwrap(),
            "busybox:latest"
        );
        assert_eq!(normalize("docker.io/foo/bar:2").unwrap(), "foo/bar:2");
        assert_eq!(
            normalize("localhost:5000/x:1").unwrap(),
            "localhost:5000/x:1"
        );
        assert_eq!(
            normalize("localhost:5000/x").unwrap(),
            "localhost:5000/x:latest"
        );
        assert_eq!(
            normalize("quay.io/a/b-c_d.e").unwrap(),
            "quay.io/a/b-c_d.e:latest"
        );
        assert_eq!(normalize("localhost/img").unwrap(), "localhost/img:latest");
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in [
            "",
            "Busybox",
            "a//b",
            "a:",
            "a:-x",
            "x@sha256:00",
            "/a",
            "a/",
            "host:port/x",
        ] {
            assert!(normalize(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn tags_split_after_the_last_slash() {
        assert_eq!(split_tag("a/b:c"), ("a/b", Some("c")));
        assert_eq!(split_tag("h:5000/b"), ("h:5000/b", None));
        assert_eq!(split_tag("b"), ("b", None));
        assert!(has_tag("h:5000/b:1"));
        assert!(!has_tag("h:5000/b"));
    }

    #[test]
    fn bare_tags_are_told_from_references() {
        assert!(is_bare_tag("latest"));
        assert!(is_bare_tag("1.36"));
        assert!(!is_bare_tag("busybox:latest"));
        assert!(!is_bare_tag("quay.io/x"));
    }

    #[test]
    fn digests_and_prefixes() {
        let hex = "a".repeat(64);
        let full = format!("sha256:{hex}");
        assert_eq!(as_digest(&full), Some(DigestRef::Full(&hex)));
        assert_eq!(as_digest(&hex), Some(DigestRef::Full(&hex)));
        assert_eq!(as_digest("abcd"), Some(DigestRef::Prefix("abcd")));
        assert_eq!(as_digest("sha256:abc12"), Some(DigestRef::Prefix("abc12")));
        assert_eq!(as_digest("abc"), None);
        assert_eq!(as_digest("busybox"), None);
    }
}
