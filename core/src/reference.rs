//! Image references: `[registry[:port]/]repo[:tag][@sha256:...]`, and the local transports
//! `oci:DIR[:TAG]` and `oci-archive:FILE[:TAG]`.
//!
//! Short names (no registry part) resolve against a default registry that the caller passes in:
//! r8im's `r8.im` for the CLI. Docker Hub names are normalised (`docker.io/library/ubuntu`).

use core::fmt;

use crate::digest::Digest;
use crate::error::Error;

/// Registry host of Docker Hub as written in references.
pub const DOCKER_HUB: &str = "docker.io";
/// Host that serves Docker Hub's registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// Default registry for short names, as in Replicate's r8im.
pub const DEFAULT_REGISTRY: &str = "r8.im";

/// A reference to an image in a registry.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host with optional port, normalised (`docker.io` for Docker Hub).
    pub registry: String,
    /// Repository path (`library/ubuntu`, `user/model`).
    pub repository: String,
    /// Tag, if given (`latest` is assumed by [`Reference::reference`] when neither tag nor digest is).
    pub tag: Option<String>,
    /// Digest, if given.
    pub digest: Option<Digest>,
    /// Scheme forced by the user with `http://` or `https://`.
    pub scheme: Option<Scheme>,
}

/// URL scheme for a registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP (local registries).
    Http,
    /// HTTPS.
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Any image location lamina accepts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ImageRef {
    /// An image in a registry.
    Registry(Reference),
    /// An OCI image layout directory (`oci:DIR[:TAG]`).
    OciLayout {
        /// The directory.
        path: String,
        /// The tag (`org.opencontainers.image.ref.name`), default `latest`.
        tag: String,
    },
    /// A tar of an OCI image layout (`oci-archive:FILE[:TAG]`).
    OciArchive {
        /// The file.
        path: String,
        /// The tag, default `latest`.
        tag: String,
    },
}

impl ImageRef {
    /// Parses any form. `default_registry` is used for names without a registry part.
    pub fn parse(input: &str, default_registry: &str) -> Result<Self, Error> {
        if let Some(rest) = input.strip_prefix("oci:") {
            let (path, tag) = split_layout(input, rest)?;
            return Ok(ImageRef::OciLayout { path, tag });
        }
        if let Some(rest) = input.strip_prefix("oci-archive:") {
            let (path, tag) = split_layout(input, rest)?;
            return Ok(ImageRef::OciArchive { path, tag });
        }
        Reference::parse(input, default_registry).map(ImageRef::Registry)
    }
}

fn split_layout(input: &str, rest: &str) -> Result<(String, String), Error> {
    // The tag is after the last ':' unless that ':' belongs to the path (contains '/').
    let (path, tag) = match rest.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') && !p.is_empty() => (p, t),
        _ => (rest, "latest"),
    };
    if path.is_empty() {
        return Err(Error::InvalidReference {
            input: input.into(),
            reason: "missing layout path".into(),
        });
    }
    if !valid_tag(tag) {
        return Err(Error::InvalidReference {
            input: input.into(),
            reason: format!("invalid tag {tag:?}"),
        });
    }
    Ok((path.to_string(), tag.to_string()))
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_component(c: &str) -> Result<(), String> {
    if c.is_empty() {
        return Err("empty path component".into());
    }
    let b = c.as_bytes();
    if !b
        .iter()
        .all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || matches!(x, b'.' | b'_' | b'-'))
    {
        if b.iter().any(u8::is_ascii_uppercase) {
            return Err(format!("repository names must be lowercase ({c:?})"));
        }
        return Err(format!("invalid character in repository component {c:?}"));
    }
    let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
        return Err(format!(
            "repository component {c:?} must start and end with a letter or digit"
        ));
    }
    // separators: '.', '_', '__', or any run of '-'
    let mut i = 0;
    while i < b.len() {
        if !alnum(&b[i]) {
            let start = i;
            while i < b.len() && !alnum(&b[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
            if !ok {
                return Err(format!(
                    "invalid separator {sep:?} in repository component {c:?}"
                ));
            }
        } else {
            i += 1;
        }
    }
    Ok(())
}

fn valid_host(h: &str) -> bool {
    if h.starts_with('[') {
        // IPv6 literal, optionally with port
        return h.contains(']');
    }
    let (host, port) = match h.rsplit_once(':') {
        Some((a, p)) => (a, Some(p)),
        None => (h, None),
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl Reference {
    /// Parses `[http(s)://][registry[:port]/]repo[:tag][@sha256:...]`.
    pub fn parse(input: &str, default_registry: &str) -> Result<Self, Error> {
        let err = |reason: String| Error::InvalidReference {
            input: input.chars().take(256).collect(),
            reason,
        };
        let mut s = input.trim();
        if s.is_empty() {
            return Err(err("empty reference".into()));
        }
        if s != input {
            return Err(err("leading or trailing whitespace".into()));
        }
        let mut scheme = None;
        if let Some(r) = s.strip_prefix("docker://") {
            s = r;
        } else if let Some(r) = s.strip_prefix("http://") {
            s = r;
            scheme = Some(Scheme::Http);
        } else if let Some(r) = s.strip_prefix("https://") {
            s = r;
            scheme = Some(Scheme::Https);
        } else if s.contains("://") {
            return Err(err("unknown scheme (use http://, https:// or none)".into()));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((a, d)) => {
                let d = Digest::parse(d).map_err(|e| err(format!("bad digest: {e}")))?;
                (a, Some(d))
            }
            None => (s, None),
        };
        // tag: after the last ':' that comes after the last '/'
        let last_slash = name_tag.rfind('/');
        let (name, tag) = match name_tag.rfind(':') {
            Some(i) if last_slash.is_none_or(|j| i > j) => {
                (&name_tag[..i], Some(&name_tag[i + 1..]))
            }
            _ => (name_tag, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(err(format!(
                    "invalid tag {t:?} (letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-')"
                )));
            }
        }
        let (registry, repo) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.starts_with('[') =>
            {
                if !valid_host(first) {
                    return Err(err(format!("invalid registry host {first:?}")));
                }
                (first.to_string(), rest.to_string())
            }
            _ => {
                if scheme.is_some() {
                    return Err(err("a URL scheme needs a registry host".into()));
                }
                (default_registry.to_string(), name.to_string())
            }
        };
        if repo.is_empty() {
            return Err(err("missing repository name".into()));
        }
        let mut registry = registry.to_ascii_lowercase();
        let mut repo = repo;
        if matches!(
            registry.as_str(),
            "docker.io" | "index.docker.io" | "registry-1.docker.io"
        ) {
            registry = DOCKER_HUB.to_string();
            if !repo.contains('/') {
                repo = format!("library/{repo}");
            }
        }
        for c in repo.split('/') {
            valid_component(c).map_err(err)?;
        }
        if repo.len() > 255 {
            return Err(err("repository name longer than 255 characters".into()));
        }
        Ok(Reference {
            registry,
            repository: repo,
            tag: tag.map(str::to_string),
            digest,
            scheme,
        })
    }

    /// What goes after `/manifests/`: the digest if present, else the tag, else `latest`.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The tag to push to: the given tag, or `latest`.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// The host that serves the registry API (Docker Hub's differs from its name).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The scheme to use: forced by the reference, else plain HTTP for loopback hosts (as Docker
    /// does), else HTTPS. Drivers may override with `--insecure`.
    pub fn default_scheme(&self) -> Scheme {
        if let Some(s) = self.scheme {
            return s;
        }
        let host = match self.registry.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => &self.registry,
        };
        if matches!(host, "localhost" | "127.0.0.1" | "[::1]") || host.starts_with("127.") {
            Scheme::Http
        } else {
            Scheme::Https
        }
    }

    /// The same repository at another digest.
    pub fn with_digest(&self, d: Digest) -> Reference {
        Reference {
            digest: Some(d),
            ..self.clone()
        }
    }

    /// `registry/repo` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
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

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn p(s: &str) -> Reference {
        Reference::parse(s, DEFAULT_REGISTRY).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn short_names_go_to_the_default_registry() {
        let r = p("someuser/model:v1");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("r8.im", "someuser/model", Some("v1"))
        );
        assert_eq!(r.reference(), "v1");
        assert_eq!(p("model").reference(), "latest");
        assert_eq!(p("model").to_string(), "r8.im/model");
    }

    #[test]
    fn docker_hub_is_normalised() {
        let r = p("docker.io/ubuntu");
        assert_eq!(r.to_string(), "docker.io/library/ubuntu");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(
            p("index.docker.io/foo/bar:1").to_string(),
            "docker.io/foo/bar:1"
        );
        let hub = Reference::parse("ubuntu:22.04", "docker.io").unwrap();
        assert_eq!(hub.to_string(), "docker.io/library/ubuntu:22.04");
    }

    #[test]
    fn registry_with_port_tag_and_digest() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = p(&format!("127.0.0.1:5000/a/b/c:tag@{d}"));
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "a/b/c");
        assert_eq!(r.tag.as_deref(), Some("tag"));
        assert_eq!(r.reference(), d);
        assert_eq!(r.default_scheme(), Scheme::Http);
        assert_eq!(p("localhost:5000/x").default_scheme(), Scheme::Http);
        assert_eq!(p("ghcr.io/x/y").default_scheme(), Scheme::Https);
        assert_eq!(p("http://reg.example:80/x").default_scheme(), Scheme::Http);
        assert_eq!(p("localhost/x").registry, "localhost");
    }

    #[test]
    fn malformed_references_are_refused_with_reasons() {
        for (bad, why) in [
            ("", "empty"),
            ("Upper/case", "lowercase"),
            ("repo:", "invalid tag"),
            ("repo:-x", "invalid tag"),
            ("repo@sha256:123", "bad digest"),
            ("a//b", "empty path component"),
            ("a/b/", "empty path component"),
            ("-a/b", "start and end"),
            ("a/b..c", "invalid separator"),
            ("a..b/c", "invalid registry host"),
            ("ftp://x/y", "unknown scheme"),
            ("http://repo", "registry host"),
            ("reg.example:port/x", "invalid registry host"),
            (" repo", "whitespace"),
        ] {
            let e = Reference::parse(bad, DEFAULT_REGISTRY)
                .expect_err(bad)
                .to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn transports() {
        assert_eq!(
            ImageRef::parse("oci:out:v1", "r8.im").unwrap(),
            ImageRef::OciLayout {
                path: "out".into(),
                tag: "v1".into()
            }
        );
        assert_eq!(
            ImageRef::parse("oci:/tmp/x", "r8.im").unwrap(),
            ImageRef::OciLayout {
                path: "/tmp/x".into(),
                tag: "latest".into()
            }
        );
        assert_eq!(
            ImageRef::parse("oci-archive:a.tar:t", "r8.im").unwrap(),
            ImageRef::OciArchive {
                path: "a.tar".into(),
                tag: "t".into()
            }
        );
        assert!(ImageRef::parse("oci:", "r8.im").is_err());
        assert!(matches!(
            ImageRef::parse("x/y", "r8.im").unwrap(),
            ImageRef::Registry(_)
        ));
    }
}
