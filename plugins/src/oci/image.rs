//! Image references as people write them: `[REGISTRY/]REPO[:TAG][@DIGEST]`, parsed once here
//! for every place that reads one (`acr warm IMAGE`, a container token's `containerImage`).
//!
//! The first path part is a registry when it looks like a host (it has a `.` or a `:`, or is
//! `localhost`), as docker and containerd decide; the tag is after the last `:` of the last
//! path part. What each caller does with a missing registry or tag is its own choice (warm
//! sends none and lets the proxy pick its default upstream; a token names `docker.io`).

use std::fmt;

use super::reference::{is_repository, is_tag};
use super::Digest;

/// An image reference, split and checked (the registry host, the repository grammar, the tag,
/// the digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    /// The registry host, lowercased; `None` when the reference names none.
    pub registry: Option<String>,
    /// The repository exactly as written (no `library/` added).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageReference {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad =
            |why: &str| format!("`{text}` is not an image ([REGISTRY/]REPO[:TAG|@DIGEST]): {why}");
        let (name, digest) = match text.split_once('@') {
            Some((name, d)) => (name, Some(Digest::parse(d).map_err(&bad)?)),
            None => (text, None),
        };
        let (registry, rest) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !is_registry_host(first) {
                    return Err(bad(&format!("`{first}` is not a registry host")));
                }
                (Some(first.to_ascii_lowercase()), rest)
            }
            _ => (None, name),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if !is_repository(repository) {
            return Err(bad(&format!(
                "`{repository}` is not a repository (lowercase letters and digits, joined by `.`, `_`, `__` or `-`, in `/`-separated parts)"
            )));
        }
        if let Some(tag) = tag.filter(|t| !is_tag(t)) {
            return Err(bad(&format!("`{tag}` is not a tag")));
        }
        Ok(Self {
            registry,
            repository: repository.to_string(),
            tag: tag.map(String::from),
            digest,
        })
    }

    /// The repository as its registry names it: a one-word Docker Hub name (no registry, or
    /// `docker.io` and its aliases) is under `library/`.
    pub fn registry_repository(&self) -> String {
        let hub = self
            .registry
            .as_deref()
            .is_none_or(|r| matches!(r, "docker.io" | "index.docker.io" | "registry-1.docker.io"));
        if hub && !self.repository.contains('/') {
            format!("library/{}", self.repository)
        } else {
            self.repository.clone()
        }
    }

    /// What a registry is asked for: the digest when there is one, else the tag, else `latest`.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.registry {
            write!(f, "{r}/")?;
        }
        f.write_str(&self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// `host[:port]` or `[v6]:port`, nothing else: no scheme, path, query, fragment or user.
/// An `ns` is glued into a URL, so `evil.example/x.azurecr.io` (or `#`, `?`, `@`) must never
/// get as far as matching `*.azurecr.io`.
pub fn is_registry_host(ns: &str) -> bool {
    let host = if let Some(rest) = ns.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.is_empty()
            || !v6
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return false;
        }
        return after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
    } else {
        match ns.rsplit_once(':') {
            Some((host, port)) if is_port(port) => host,
            Some(_) => return false,
            None => ns,
        }
    };
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(text: &str) -> (Option<String>, String, String) {
        let r = ImageReference::parse(text).unwrap();
        (r.registry.clone(), r.repository.clone(), r.reference())
    }

    #[test]
    fn image_references() {
        assert_eq!(
            parts("library/test:1"),
            (None, "library/test".into(), "1".into())
        );
        assert_eq!(
            parts("127.0.0.1:5000/library/test"),
            (
                Some("127.0.0.1:5000".into()),
                "library/test".into(),
                "latest".into()
            )
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            parts(&format!("ghcr.io/org/app:v1@{d}")),
            (Some("ghcr.io".into()), "org/app".into(), d.clone())
        );
        assert_eq!(parts("localhost/app").0.as_deref(), Some("localhost"));
        assert_eq!(parts("[::1]:5000/app").0.as_deref(), Some("[::1]:5000"));
        assert_eq!(parts("Reg.IO/app").0.as_deref(), Some("reg.io"));
        assert_eq!(parts("alpine"), (None, "alpine".into(), "latest".into()));
        let shown = format!("ghcr.io/org/app:v1@{d}");
        assert_eq!(ImageReference::parse(&shown).unwrap().to_string(), shown);
        for bad in [
            "",
            "Upper/case",
            "a//b",
            "a/../b",
            "repo:",
            "repo:bad tag",
            "repo@sha256:abc",
            "repo@md5:0000",
            "evil.com#x/app",
            "a/b?x=1",
            "reg.io/",
        ] {
            assert!(ImageReference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn registry_hosts() {
        for ok in ["docker.io", "127.0.0.1:5000", "localhost", "[::1]:5000"] {
            assert!(is_registry_host(ok), "{ok}");
        }
        for bad in [
            "evil.com/x",
            "evil.com#.x",
            "user@evil.com",
            "a..b",
            "a.com:",
            "",
        ] {
            assert!(!is_registry_host(bad), "{bad}");
        }
    }
}
