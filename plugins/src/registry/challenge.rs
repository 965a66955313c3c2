//! `WWW-Authenticate` challenges (RFC 7235): several per header, quoted values with escapes.
//!
//! `Bearer realm="https://auth.example/token",service="registry",scope="repository:a:pull,push"`
//! parses to a `Bearer` challenge with three parameters; a comma inside quotes stays in the
//! value (the old tool split on commas and had to special-case `pull,push`).

use std::collections::BTreeMap;

/// One challenge: its scheme (lowercased) and parameters (names lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    pub fn is_bearer(&self) -> bool {
        self.scheme == "bearer"
    }

    pub fn is_basic(&self) -> bool {
        self.scheme == "basic"
    }
}

/// Parses every challenge in a header value. Malformed parts are skipped, never a panic.
pub fn parse(header: &str) -> Vec<Challenge> {
    let mut p = Scanner {
        s: header.as_bytes(),
        i: 0,
    };
    let mut out: Vec<Challenge> = Vec::new();
    loop {
        p.skip_ws_commas();
        let Some(token) = p.token() else {
            if p.i >= p.s.len() {
                break;
            }
            p.i += 1; // skip a stray byte
            continue;
        };
        p.skip_ws();
        if p.peek() == Some(b'=') {
            // `name=value` belongs to the challenge before it.
            p.i += 1;
            p.skip_ws();
            let value = p.value();
            if let Some(last) = out.last_mut() {
                last.params.insert(token.to_ascii_lowercase(), value);
            }
            continue;
        }
        // A new scheme; a token68 may follow (`Basic abc==`), which we keep as `token68`.
        let mut challenge = Challenge {
            scheme: token.to_ascii_lowercase(),
            params: BTreeMap::new(),
        };
        let save = p.i;
        if let Some(t68) = p.token68() {
            p.skip_ws();
            if p.peek().is_none_or(|c| c == b',') && !t68.is_empty() {
                challenge.params.insert("token68".into(), t68);
            } else {
                p.i = save;
            }
        }
        out.push(challenge);
    }
    out
}

struct Scanner<'a> {
    s: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c == b' ' || c == b'\t') {
            self.i += 1;
        }
    }

    fn skip_ws_commas(&mut self) {
        while self
            .peek()
            .is_some_and(|c| c == b' ' || c == b'\t' || c == b',')
        {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Option<String> {
        self.run_of(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
    }

    fn token68(&mut self) -> Option<String> {
        self.run_of(|c| c.is_ascii_alphanumeric() || b"-._~+/=".contains(&c))
    }

    /// The bytes from here on that `allowed` accepts, if there is at least one.
    fn run_of(&mut self, allowed: impl Fn(u8) -> bool) -> Option<String> {
        let start = self.i;
        while self.peek().is_some_and(&allowed) {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn value(&mut self) -> String {
        if self.peek() != Some(b'"') {
            // Lenient: an unquoted value runs to the next comma or space (servers send URLs).
            let start = self.i;
            while self
                .peek()
                .is_some_and(|c| c != b',' && c != b' ' && c != b'\t')
            {
                self.i += 1;
            }
            return String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        }
        self.i += 1;
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_with_comma_in_scope() {
        let c = parse(
            r#"Bearer realm="https://host.io/oauth2/token",service="host.io",scope="repository:hello-world:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert!(c[0].is_bearer());
        assert_eq!(c[0].param("realm"), Some("https://host.io/oauth2/token"));
        assert_eq!(c[0].param("service"), Some("host.io"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository:hello-world:pull,push")
        );
    }

    #[test]
    fn several_challenges_and_escapes() {
        let c = parse(r#"Basic realm="a \"quoted\" realm", Bearer realm=https://t/x, service="s""#);
        assert_eq!(c.len(), 2);
        assert!(c[0].is_basic());
        assert_eq!(c[0].param("realm"), Some(r#"a "quoted" realm"#));
        assert_eq!(c[1].param("realm"), Some("https://t/x"));
        assert_eq!(c[1].param("service"), Some("s"));
    }

    #[test]
    fn garbage_never_panics() {
        for s in [
            "",
            "=",
            "\"",
            "Bearer realm=\"unterminated",
            ",,,",
            "Basic abc==",
            "ü realm=x",
        ] {
            let _ = parse(s);
        }
        assert_eq!(parse("Basic abc==")[0].param("token68"), Some("abc=="));
    }
}
