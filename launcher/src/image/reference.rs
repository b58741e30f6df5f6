//! Image references as users write them: Docker's `[REGISTRY/]REPO[:TAG][@DIGEST]`
//! and pyxis/enroot's `[USER@][REGISTRY#]IMAGE[:TAG]`, with docker.io and
//! `library/` defaults.

use std::fmt;

/// The registry used when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host\[:port\], e.g. `nvcr.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/ubuntu`.
    pub repository: String,
    /// Tag, when given (`latest` when neither tag nor digest is).
    pub tag: Option<String>,
    /// `sha256:<hex>`, when given.
    pub digest: Option<String>,
    /// The login to use for credentials (enroot's `USER@`).
    pub user: Option<String>,
}

/// A reference that cannot be parsed.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid image reference {reference:?}: {why}")]
pub struct ReferenceError {
    /// The text.
    pub reference: String,
    /// What is wrong.
    pub why: String,
}

/// Why a reference with pyxis's `dockerd://` or `podman://` scheme (an
/// image from the node's own Docker or Podman daemon) cannot be used; None
/// for any other reference.
pub fn unsupported_scheme(text: &str) -> Option<String> {
    let scheme = ["dockerd://", "podman://"]
        .into_iter()
        .find(|s| text.starts_with(s))?;
    Some(format!(
        "{scheme} images (from a local Docker or Podman daemon) are not supported by berth: push the image to a registry, or `{} save` it and `berth import` the archive",
        scheme.trim_end_matches("://").trim_end_matches('d')
    ))
}

impl ImageRef {
    /// Parses either syntax.
    pub fn parse(text: &str) -> Result<ImageRef, ReferenceError> {
        let err = |why: &str| ReferenceError {
            reference: text.to_string(),
            why: why.to_string(),
        };
        if let Some(why) = unsupported_scheme(text) {
            return Err(err(&why));
        }
        let rest = text.strip_prefix("docker://").unwrap_or(text);
        if rest.is_empty() {
            return Err(err("empty"));
        }
        // enroot's USER@ comes before a REGISTRY# part (a digest's @ comes after a name).
        let (user, rest) = match (rest.find('@'), rest.find('#')) {
            (Some(at), Some(hash)) if at < hash => (Some(rest[..at].to_string()), &rest[at + 1..]),
            _ => (None, rest),
        };
        let (registry, path) = if let Some((registry, path)) = rest.split_once('#') {
            if registry.is_empty() {
                return Err(err("empty registry before '#'"));
            }
            (registry.to_string(), path)
        } else {
            match rest.split_once('/') {
                Some((first, path))
                    if first.contains('.') || first.contains(':') || first == "localhost" =>
                {
                    (first.to_string(), path)
                }
                _ => (DEFAULT_REGISTRY.to_string(), rest),
            }
        };
        let (name_tag, digest) = match path.split_once('@') {
            Some((n, d)) => (n, Some(d.to_string())),
            None => (path, None),
        };
        let (name, tag) = match name_tag.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t.to_string())),
            _ => (name_tag, None),
        };
        if let Some(d) = &digest {
            if super::oci::sha256_hex(d).is_none() {
                return Err(err(
                    "the digest must be sha256: followed by 64 lowercase hex digits",
                ));
            }
        }
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                && !t.starts_with(['.', '-']);
            if !ok {
                return Err(err("a tag is 1-128 letters, digits, '_', '.' or '-'"));
            }
        }
        if name.is_empty() || !name.split('/').all(valid_component) {
            return Err(err("the repository name must be lowercase letters, digits and separators ('.', '_', '-', '/')"));
        }
        let repository = if registry == DEFAULT_REGISTRY && !name.contains('/') {
            format!("library/{name}")
        } else {
            name.to_string()
        };
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
            user,
        })
    }

    /// Whether the registry is on this machine (plain HTTP is allowed there).
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => self.registry.as_str(),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

fn valid_component(c: &str) -> bool {
    !c.is_empty()
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
        && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
}

impl fmt::Display for ImageRef {
    /// The canonical form: `registry/repository[:tag][@digest]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn docker_forms() {
        assert_eq!(p("ubuntu").to_string(), "docker.io/library/ubuntu:latest");
        assert_eq!(
            p("ubuntu:22.04").to_string(),
            "docker.io/library/ubuntu:22.04"
        );
        assert_eq!(
            p("nvidia/cuda:12.2").to_string(),
            "docker.io/nvidia/cuda:12.2"
        );
        assert_eq!(
            p("nvcr.io/nvidia/pytorch:24.01-py3").to_string(),
            "nvcr.io/nvidia/pytorch:24.01-py3"
        );
        assert_eq!(p("127.0.0.1:5000/test/img:v1").registry, "127.0.0.1:5000");
        assert_eq!(p("localhost/img").registry, "localhost");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = p(&format!("busybox@{d}"));
        assert_eq!((r.tag, r.digest), (None, Some(d.clone())));
        let r = p(&format!("docker://127.0.0.1:5000/x:1@{d}"));
        for local in ["dockerd://ubuntu:24.04", "podman://ubuntu"] {
            let why = ImageRef::parse(local).unwrap_err().why;
            assert!(why.contains("not supported by berth"), "{why}");
        }
        assert_eq!(
            (r.tag.as_deref(), r.digest.as_deref()),
            (Some("1"), Some(d.as_str()))
        );
    }

    #[test]
    fn enroot_forms() {
        let r = p("nvcr.io#nvidia/pytorch:24.01-py3");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("nvcr.io", "nvidia/pytorch", Some("24.01-py3"))
        );
        let r = p("alice@nvcr.io#nvidia/pytorch");
        assert_eq!(r.user.as_deref(), Some("alice"));
        assert_eq!(r.to_string(), "nvcr.io/nvidia/pytorch:latest");
        assert_eq!(p("127.0.0.1:5000#busybox:1").repository, "busybox");
        assert_eq!(p("docker.io#busybox").repository, "library/busybox");
    }

    #[test]
    fn bad_references() {
        for bad in [
            "",
            "UPPER/case",
            "a//b",
            "img:",
            "img:bad tag",
            "img@sha256:abc",
            "#img",
            "img:-x",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn loopback() {
        assert!(p("127.0.0.1:5000/x").is_loopback());
        assert!(p("localhost:5000/x").is_loopback());
        assert!(p("[::1]:5000/x").is_loopback());
        assert!(!p("nvcr.io/x").is_loopback());
        assert!(!p("10.0.0.1:5000/x").is_loopback());
    }
}
