//! What `image pull REF` names: the registry and repository to ask, the
//! tag or digest, the name the image gets in the store, and whether plain
//! HTTP may be used. That last decision is made here, before any
//! connection, so a reference cannot talk us into sending requests in the
//! clear to a host that is not this one.

use std::net::{Ipv4Addr, Ipv6Addr};

use oci_client::Reference;

use crate::image::digest;
use crate::image::error::ImageError;
use crate::image::reference;

/// A parsed `image pull` reference.
#[derive(Debug, Clone)]
pub struct Target {
    /// The reference as the user wrote it, for messages.
    pub shown: String,
    /// What the registry client asks for.
    pub reference: Reference,
    /// The store name (normalised, `:latest` added); None for a reference by
    /// digest alone, which has no tag to name the image by.
    pub name: Option<String>,
    /// Talk plain HTTP to the registry.
    pub http: bool,
}

/// A scheme written before the reference (`http://host/repo:tag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Target {
    /// Parses `input` (`[http://|https://]name[:tag][@sha256:hex]`). Plain
    /// HTTP is used for loopback registries and with `insecure`; asking for
    /// it (`http://`) for any other registry without `insecure` is refused.
    pub fn parse(input: &str, insecure: bool) -> Result<Target, ImageError> {
        let bad = |reason: &str| ImageError::BadReference {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = if let Some(r) = input.strip_prefix("http://") {
            (Some(Scheme::Http), r)
        } else if let Some(r) = input.strip_prefix("https://") {
            (Some(Scheme::Https), r)
        } else {
            (None, input)
        };
        let (name_part, digest) = match rest.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (rest, None),
        };
        if let Some(d) = digest {
            digest::require_hex(d, "the reference's digest")
                .map_err(|_| bad("a digest is sha256:<64 lowercase hex digits>"))?;
        }
        // The store's rules decide what a valid name is, and how it is kept.
        let normalized = reference::normalize(name_part)?;
        let name = (digest.is_none() || reference::has_tag(name_part)).then_some(normalized);
        let parsed = Reference::try_from(rest).map_err(|e| bad(&e.to_string()))?;
        let loopback = is_loopback(parsed.registry());
        let http = match scheme {
            Some(Scheme::Https) => false,
            Some(Scheme::Http) if !(loopback || insecure) => {
                return Err(ImageError::Insecure {
                    reference: input.to_string(),
                    registry: parsed.registry().to_string(),
                })
            }
            Some(Scheme::Http) => true,
            None => loopback || insecure,
        };
        Ok(Target {
            shown: input.to_string(),
            reference: parsed,
            name,
            http,
        })
    }

    /// The registry's address, as requests go to it.
    pub fn registry(&self) -> &str {
        self.reference.resolve_registry()
    }
}

/// True for `localhost`, 127.0.0.0/8 and ::1, with or without a port.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(bracketed) = registry.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        registry.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback())
        || host.parse::<Ipv6Addr>().is_ok_and(|a| a.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn loopback_hosts() {
        for yes in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in [
            "docker.io",
            "10.0.0.1:5000",
            "128.0.0.1",
            "[::2]:5000",
            "localhost.example",
        ] {
            assert!(!is_loopback(no), "{no}");
        }
    }

    #[test]
    fn names_registries_and_schemes() {
        let t = Target::parse("127.0.0.1:5000/kvmpod/test:1", false).unwrap();
        assert_eq!(t.name.as_deref(), Some("127.0.0.1:5000/kvmpod/test:1"));
        assert_eq!(t.registry(), "127.0.0.1:5000");
        assert_eq!(t.reference.repository(), "kvmpod/test");
        assert!(t.http);

        let t = Target::parse("busybox", false).unwrap();
        assert_eq!(t.name.as_deref(), Some("busybox:latest"));
        assert_eq!(t.registry(), "index.docker.io");
        assert_eq!(t.reference.repository(), "library/busybox");
        assert_eq!(t.reference.tag(), Some("latest"));
        assert!(!t.http);

        let t = Target::parse("quay.io/a/b:2", true).unwrap();
        assert!(t.http, "--insecure allows plain HTTP");
        let t = Target::parse("https://localhost:5000/x:1", false).unwrap();
        assert!(!t.http, "https:// asks for TLS even on loopback");
        assert_eq!(t.name.as_deref(), Some("localhost:5000/x:1"));
    }

    #[test]
    fn digests_name_nothing_unless_tagged() {
        let t = Target::parse(&format!("quay.io/a/b@sha256:{HEX}"), false).unwrap();
        assert_eq!(t.name, None);
        assert_eq!(t.reference.digest(), Some(format!("sha256:{HEX}").as_str()));
        let t = Target::parse(&format!("quay.io/a/b:3@sha256:{HEX}"), false).unwrap();
        assert_eq!(t.name.as_deref(), Some("quay.io/a/b:3"));
        assert!(Target::parse("quay.io/a/b@sha256:abc", false).is_err());
        assert!(Target::parse("quay.io/a/b@md5:abc", false).is_err());
    }

    #[test]
    fn plain_http_elsewhere_needs_insecure() {
        match Target::parse("http://registry.example:5000/x:1", false) {
            Err(ImageError::Insecure { registry, .. }) => {
                assert_eq!(registry, "registry.example:5000")
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Target::parse("http://registry.example:5000/x:1", true)
                .unwrap()
                .http
        );
        assert!(
            Target::parse("http://127.0.0.1:5000/x:1", false)
                .unwrap()
                .http
        );
        assert!(Target::parse("Bad/Name", false).is_err());
    }
}
