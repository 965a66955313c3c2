//! Names, tags and digests as the OCI distribution spec defines them: a manifest [`Reference`]
//! (a tag or a digest) and the repository-name grammar.

use std::fmt;

use super::Digest;

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.contains(':') {
            return Digest::parse(text).map(Reference::Digest);
        }
        if is_tag(text) {
            Ok(Reference::Tag(text.to_string()))
        } else {
            Err("a tag is up to 128 of [A-Za-z0-9_.-], not starting with . or -")
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
pub fn is_tag(text: &str) -> bool {
    let b = text.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

/// A repository name per the OCI grammar: path components of `[a-z0-9]+` joined by `.`, `_`,
/// `__` or runs of `-`, separated by `/`; at most 255 characters. `..` never passes.
pub fn is_repository(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    name.split('/').all(is_component)
}

fn is_component(part: &str) -> bool {
    let b = part.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator: `.`, `_`, `__`, or a run of `-`, always between alphanumerics.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !is_alnum(b[i]) {
            return false;
        }
    }
    true
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_grammar() {
        for ok in [
            "library/test",
            "a",
            "ghcr.io",
            "org/app.v2",
            "a__b",
            "a_b-c--d/e.f",
            "x/y/z",
        ] {
            assert!(is_repository(ok), "{ok}");
        }
        for bad in [
            "", "..", "a/../b", "A", "a//b", "-a", "a-", "a.", "a___b", "a/.b", "a b",
        ] {
            assert!(!is_repository(bad), "{bad}");
        }
        assert!(!is_repository(&"a".repeat(256)));
    }

    #[test]
    fn references() {
        assert!(matches!(
            Reference::parse("_9demo_.thats-reall8y_cool"),
            Ok(Reference::Tag(_))
        ));
        assert!(Reference::parse(&"t".repeat(129)).is_err());
        assert!(Reference::parse(".x").is_err());
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(Reference::parse(&d), Ok(Reference::Digest(_))));
        assert!(Reference::parse("sha256:abc").is_err());
        assert!(Reference::parse(&format!("md5:{}", "a".repeat(64))).is_err());
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
