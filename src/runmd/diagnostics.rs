//! Diagnostics: what is wrong in a runmd file, where, and what to do about it.
//!
//! Rendered the way rustc does it, so the fault is found at a glance:
//!
//! ```text
//! error: unknown plugin '.resolv'
//!   --> mirror.runmd:24:5
//!    |
//! 24 | :   .resolv application/vnd.oci.image.manifest.v1+json
//!    |     ^^^^^^^
//!    = hint: did you mean '.resolve'?
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

/// A place in a file: 1-based line and column (in characters) and a length in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub line: u32,
    pub col: u32,
    pub len: u32,
}

impl Span {
    pub fn new(line: u32, col: u32, len: u32) -> Self {
        Self { line, col, len }
    }
}

/// One problem in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    pub span: Span,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(span: Span, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            span,
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn maybe_hint(mut self, hint: Option<String>) -> Self {
        if hint.is_some() {
            self.hint = hint;
        }
        self
    }
}

/// Every diagnostic of one file, with the source needed to show the offending lines.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Report {
    pub path: PathBuf,
    pub text: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn new(path: &Path, source: &str, mut diagnostics: Vec<Diagnostic>) -> Self {
        diagnostics.sort_by_key(|d| (d.span.line, d.span.col));
        Self {
            path: path.to_path_buf(),
            text: source.to_string(),
            diagnostics,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            render(f, &self.path, &self.text, d)?;
        }
        let n = self.diagnostics.len();
        if n > 1 {
            write!(f, "\n{n} errors in {}", self.path.display())?;
        }
        Ok(())
    }
}

fn render(f: &mut fmt::Formatter<'_>, path: &Path, source: &str, d: &Diagnostic) -> fmt::Result {
    let line_no = d.span.line.max(1);
    let width = line_no.to_string().len();
    let pad = " ".repeat(width);
    writeln!(f, "error: {}", d.message)?;
    writeln!(
        f,
        "{pad}--> {}:{}:{}",
        path.display(),
        line_no,
        d.span.col.max(1)
    )?;
    if let Some(text) = source.lines().nth(line_no as usize - 1) {
        // Tabs would shift the caret; show them as single spaces on both lines.
        let shown: String = text
            .chars()
            .map(|c| if c == '\t' { ' ' } else { c })
            .collect();
        let indent = " ".repeat(d.span.col.saturating_sub(1) as usize);
        let carets = "^".repeat(d.span.len.max(1) as usize);
        writeln!(f, "{pad} |")?;
        writeln!(f, "{line_no} | {shown}")?;
        writeln!(f, "{pad} | {indent}{carets}")?;
    }
    if let Some(hint) = &d.hint {
        writeln!(f, "{pad} = hint: {hint}")?;
    }
    Ok(())
}

/// The candidate closest to `word` by edit distance, when it is close enough to be a typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let limit = match word.chars().count() {
        0..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

/// Levenshtein distance over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_and_suggestion() {
        assert_eq!(edit_distance("resolv", "resolve"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(
            did_you_mean("resolv", ["resolve", "pull", "mirror"]).as_deref(),
            Some("resolve")
        );
        assert_eq!(did_you_mean("zzzzzz", ["resolve", "pull"]), None);
    }

    #[test]
    fn renders_caret_under_the_fault() {
        let src = "```x y\n: .resolv a\n```\n";
        let r = Report::new(
            Path::new("f.runmd"),
            src,
            vec![
                Diagnostic::new(Span::new(2, 3, 7), "unknown plugin '.resolv'")
                    .with_hint("did you mean '.resolve'?"),
            ],
        );
        let text = r.to_string();
        assert!(text.contains("--> f.runmd:2:3"), "{text}");
        assert!(text.contains("2 | : .resolv a\n  |   ^^^^^^^\n"), "{text}");
        assert!(text.contains("= hint: did you mean '.resolve'?"), "{text}");
    }
}
