//! From markdown text to runmd items: block headers and attribute lines, in file order.
//!
//! A runmd file is markdown. Only fenced regions are runmd; prose is never lexed, so a `+` or `:`
//! in a sentence cannot become an attribute. A fence opens a runmd block when its info string is
//! one or two identifiers (`` ``` mirror ``, `` ``` start mirror ``) that are not the name of a
//! well-known language: `` ```sh ``, `` ```json ``, `~~~` fences and the like stay prose, so a
//! runmd file can carry ordinary code examples. Inside a runmd block a fence line is always a
//! header: a bare one closes the block, one word opens a sibling block (same name, new symbol),
//! two words open or reopen the block `name symbol`.

use super::diagnostics::{Diagnostic, Span};
use super::lexer::{lex_head, Lexeme, Token};

/// Fence info strings that mean "this is an ordinary code example", never a runmd block.
pub const PROSE_LANGUAGES: &[&str] = &[
    "sh",
    "bash",
    "shell",
    "console",
    "zsh",
    "fish",
    "powershell",
    "ps1",
    "json",
    "jsonc",
    "toml",
    "yaml",
    "yml",
    "text",
    "txt",
    "plain",
    "md",
    "markdown",
    "diff",
    "patch",
    "rust",
    "rs",
    "python",
    "py",
    "go",
    "c",
    "cpp",
    "ini",
    "dockerfile",
    "http",
    "xml",
    "html",
    "css",
    "js",
    "javascript",
    "ts",
    "typescript",
    "sql",
    "log",
    "output",
];

/// A value with the place it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

/// How an attribute line begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `+` or `add`: a new attribute.
    Add,
    /// `:`: a property of the attribute before it.
    Colon,
    /// `define NAME SYMBOL`: a named property, independent of the attribute before it.
    Define,
}

/// One attribute line, e.g. `: .host localhost:8578, resolve, pull`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrLine {
    pub op: Op,
    pub op_span: Span,
    pub name: Option<Spanned<String>>,
    pub symbol: Option<Spanned<String>>,
    /// The type or attribute, without its dot.
    pub ty: Spanned<String>,
    /// The rest of the line, comments removed and trimmed.
    pub value: Spanned<String>,
    /// The source column of each character of `value`, for carets under part of it.
    pub value_cols: Vec<u32>,
}

/// A block header, already resolved to its full `name symbol` (name is empty for a control block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHeader {
    pub name: String,
    pub symbol: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Block(BlockHeader),
    Attr(AttrLine),
}

/// The parse of one file: items in file order, and what went wrong.
#[derive(Debug, Default)]
pub struct Parsed {
    pub items: Vec<Item>,
    pub diagnostics: Vec<Diagnostic>,
    /// One-word fences read as code examples because the word is a language name, so the
    /// compiler can say so when runmd blocks refer to them.
    pub prose_fences: Vec<(String, Span)>,
}

enum State {
    Prose,
    /// Inside a prose code example opened by this fence marker.
    Code(String),
    /// Inside a runmd block: its header (for "never closed") and its name.
    Runmd {
        opened: Span,
        name: String,
    },
}

/// Parses a whole runmd (markdown) source. Never panics, whatever the input.
pub fn parse(source: &str) -> Parsed {
    let mut out = Parsed::default();
    let mut state = State::Prose;
    for (index, line) in source.lines().enumerate() {
        let line_no = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let fence = fence_marker(trimmed);
        match &mut state {
            State::Code(marker) => {
                if fence.is_some_and(|f| f.0 == *marker && f.1.trim().is_empty()) {
                    state = State::Prose;
                }
            }
            State::Prose => {
                let Some((marker, info)) = fence else {
                    continue;
                };
                let words = header_words(info).unwrap_or_default();
                let header = match words.as_slice() {
                    [one] => Some((String::new(), *one)),
                    [a, b] => Some((a.to_string(), *b)),
                    _ => None,
                };
                // Only a one-word info string can be a language; `log mirror` is a block.
                let prose = words.len() == 1
                    && PROSE_LANGUAGES.contains(&words[0].to_ascii_lowercase().as_str());
                if prose && marker.starts_with('`') {
                    let span = Span::new(line_no, col(line, indent), char_len(trimmed));
                    out.prose_fences.push((words[0].to_string(), span));
                }
                match header {
                    Some((name, symbol)) if marker.starts_with('`') && !prose => {
                        let span = Span::new(line_no, col(line, indent), char_len(trimmed));
                        out.items.push(Item::Block(BlockHeader {
                            name: name.clone(),
                            symbol: symbol.to_string(),
                            span,
                        }));
                        state = State::Runmd { opened: span, name };
                    }
                    _ => state = State::Code(marker.to_string()),
                }
            }
            State::Runmd { name, .. } => {
                if let Some((_, info)) = fence {
                    let span = Span::new(line_no, col(line, indent), char_len(trimmed));
                    let words = header_words(info);
                    let header = match words.as_deref() {
                        Some([one]) => Some((name.clone(), *one)),
                        Some([a, b]) => Some((a.to_string(), *b)),
                        _ => None,
                    };
                    match (words.as_deref(), header) {
                        (Some([]), _) => state = State::Prose,
                        (_, Some((n, symbol))) => {
                            out.items.push(Item::Block(BlockHeader {
                                name: n.clone(),
                                symbol: symbol.to_string(),
                                span,
                            }));
                            state = State::Runmd { opened: span, name: n };
                        }
                        (Some(_), None) => out.diagnostics.push(
                            Diagnostic::new(span, "a block header has at most two words")
                                .with_hint("write ``` NAME SYMBOL (an event block) or ``` SYMBOL (a control block)"),
                        ),
                        (None, _) => out.diagnostics.push(
                            Diagnostic::new(span, "this is not a valid block header")
                                .with_hint("block names start with a letter and use letters, digits and - . _ : = / #; a bare ``` closes the block"),
                        ),
                    }
                    continue;
                }
                match parse_line(line, line_no) {
                    Ok(Some(attr)) => out.items.push(Item::Attr(attr)),
                    Ok(None) => {}
                    Err(d) => out.diagnostics.push(d),
                }
            }
        }
    }
    if let State::Runmd { opened, .. } = state {
        out.diagnostics.push(
            Diagnostic::new(opened, "this block is never closed")
                .with_hint("end the block with a line of three backticks (```)"),
        );
    }
    out
}

/// A fence line: its marker (the run of backticks or tildes) and the info string after it.
/// `<```` and `<```>` (the old tool's forms) are fences too.
fn fence_marker(trimmed: &str) -> Option<(&str, &str)> {
    let body = trimmed.strip_prefix('<').unwrap_or(trimmed);
    let ch = body.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let run = body.len() - body.trim_start_matches(ch).len();
    if run < 3 {
        return None;
    }
    let (marker, info) = body.split_at(run);
    let info = info.strip_prefix('>').unwrap_or(info);
    Some((marker, info))
}

/// The identifiers of a fence's info string, or `None` if it is not a valid runmd header.
fn header_words(info: &str) -> Option<Vec<&str>> {
    let mut words = Vec::new();
    for word in info.split(|c: char| c.is_whitespace() || c == ',') {
        if word.is_empty() {
            continue;
        }
        let mut chars = word.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "-._:=/#".contains(c));
        if !(first_ok && rest_ok) {
            return None;
        }
        words.push(word);
    }
    Some(words)
}

fn col(line: &str, byte: usize) -> u32 {
    let byte = byte.min(line.len());
    let chars = line.char_indices().take_while(|(i, _)| *i < byte).count();
    u32::try_from(chars + 1).unwrap_or(u32::MAX)
}

/// The 1-based column of each of `bytes` (increasing char boundaries of `line`), in one pass.
fn columns(line: &str, bytes: &[usize]) -> Vec<u32> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut wanted = bytes.iter().peekable();
    for (column, (i, _)) in line.char_indices().enumerate() {
        while wanted.next_if(|b| **b == i).is_some() {
            out.push(u32::try_from(column + 1).unwrap_or(u32::MAX));
        }
        if wanted.peek().is_none() {
            break;
        }
    }
    out
}

fn char_len(s: &str) -> u32 {
    u32::try_from(s.chars().count()).unwrap_or(u32::MAX)
}

fn span_of(line: &str, line_no: u32, lx: &Lexeme) -> Span {
    Span::new(
        line_no,
        col(line, lx.start),
        char_len(&line[lx.start..lx.end]),
    )
}

/// Parses one line inside a runmd block. `Ok(None)` for blank and comment lines.
fn parse_line(line: &str, line_no: u32) -> Result<Option<AttrLine>, Diagnostic> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let lexemes = lex_head(line);
    let mut iter = lexemes.iter();
    let Some(first) = iter.next() else {
        return Ok(None);
    };
    let op = match first.token {
        Some(Token::Comment) => return Ok(None),
        Some(Token::Add) => Op::Add,
        Some(Token::Colon) => Op::Colon,
        Some(Token::Define) => Op::Define,
        _ => {
            return Err(Diagnostic::new(
                span_of(line, line_no, first),
                "a runmd line starts with `+`, `:`, `add` or `define`",
            )
            .with_hint(
                "prose belongs outside the fences; inside, a comment starts with `#` or `//`",
            ))
        }
    };
    let op_span = span_of(line, line_no, first);
    let mut idents: Vec<Spanned<String>> = Vec::new();
    let mut ty: Option<&Lexeme> = None;
    for lx in iter {
        match lx.token {
            Some(Token::InlineComment) => {}
            Some(Token::Ident) => idents.push(Spanned {
                value: line[lx.start..lx.end].to_string(),
                span: span_of(line, line_no, lx),
            }),
            Some(Token::Type) => {
                ty = Some(lx);
                break;
            }
            Some(Token::Comment) => break,
            Some(Token::Add) | Some(Token::Define) => idents.push(Spanned {
                value: line[lx.start..lx.end].to_string(),
                span: span_of(line, line_no, lx),
            }),
            Some(Token::Colon) | Some(Token::Comma) | None => {
                let bad = &line[lx.start..lx.end];
                return Err(Diagnostic::new(
                    span_of(line, line_no, lx),
                    format!("unexpected `{bad}`"),
                )
                .with_hint(
                    "a line is `+ [NAME [SYMBOL]] .TYPE VALUE`; names start with a letter",
                ));
            }
        }
    }
    let Some(ty) = ty else {
        let at = Span::new(line_no, char_len(line.trim_end()) + 1, 1);
        let example = match (op, idents.first()) {
            (Op::Add, Some(n)) => format!(
                "write `+ {} .TYPE VALUE`, e.g. `+ {} .true`",
                n.value, n.value
            ),
            (Op::Add, None) => "write `+ .ATTRIBUTE [VALUE]`, e.g. `+ .engine`".to_string(),
            (_, Some(n)) => format!(
                "write `: {} .TYPE VALUE`, e.g. `: {} .symbol value`",
                n.value, n.value
            ),
            (_, None) => "write `: .ATTRIBUTE [VALUE]`, e.g. `: .println hello`".to_string(),
        };
        return Err(
            Diagnostic::new(at, "expected a `.type` or `.attribute` on this line")
                .with_hint(example),
        );
    };
    if idents.len() > 2 {
        return Err(Diagnostic::new(idents[2].span, "too many names before the type").with_hint(
            "a line takes at most a name and a symbol before its `.type`; put text in the value",
        ));
    }
    if op == Op::Define && idents.is_empty() {
        return Err(Diagnostic::new(op_span, "`define` needs a name")
            .with_hint("write `define NAME SYMBOL .TYPE VALUE`"));
    }
    let mut idents = idents.into_iter();
    let name = idents.next();
    let symbol = idents.next();
    let ty_text = &line[ty.start + 1..ty.end];
    let (value, value_bytes) = value_text(line, ty.end);
    let value_col = value_bytes.first().copied().unwrap_or(ty.end);
    let value_cols = columns(line, &value_bytes);
    Ok(Some(AttrLine {
        op,
        op_span,
        name,
        symbol,
        ty: Spanned {
            value: ty_text.to_string(),
            span: span_of(line, line_no, ty),
        },
        value: Spanned {
            span: Span::new(line_no, col(line, value_col), char_len(&value).max(1)),
            value,
        },
        value_cols,
    }))
}

/// The value after the type: inline `<...>` comments removed, a trailing comment (`#` or `//`
/// after white space) cut, trimmed. Returns the text and, for each of its characters, the byte
/// in `line` it came from (a space standing for a removed comment maps to the comment).
fn value_text(line: &str, from: usize) -> (String, Vec<usize>) {
    let rest = &line[from..];
    let mut text: Vec<(char, usize)> = Vec::with_capacity(rest.len());
    let mut prev_space = true;
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if prev_space && (c == '#' || (c == '/' && rest[i..].starts_with("//"))) {
            break;
        }
        if c == '<' {
            if let Some(close) = rest[i..].find('>') {
                // Skip the inline comment, keeping one space so words do not join.
                let end = i + close;
                while chars.peek().is_some_and(|(j, _)| *j <= end) {
                    chars.next();
                }
                text.push((' ', from + i));
                prev_space = true;
                continue;
            }
        }
        prev_space = c.is_whitespace();
        text.push((c, from + i));
    }
    let first = text.iter().position(|(c, _)| !c.is_whitespace());
    let last = text.iter().rposition(|(c, _)| !c.is_whitespace());
    match (first, last) {
        (Some(a), Some(b)) => {
            let kept = &text[a..=b];
            (
                kept.iter().map(|(c, _)| *c).collect(),
                kept.iter().map(|(_, i)| *i).collect(),
            )
        }
        _ => (String::new(), Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(src: &str) -> Vec<AttrLine> {
        let p = parse(src);
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        p.items
            .into_iter()
            .filter_map(|i| match i {
                Item::Attr(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn prose_is_never_lexed() {
        let src = "# Title\nA sentence with a + and : in it, add define.\n+ .engine\n```sh\n+ .x y\n```\n";
        let p = parse(src);
        assert!(p.items.is_empty(), "{:?}", p.items);
        assert!(p.diagnostics.is_empty());
    }

    #[test]
    fn headers_resolve_names() {
        let src =
            "``` mirror\n+ .engine\n```\n``` start mirror\n+ .runtime\n``` guest\n+ x .true\n```\n";
        let p = parse(src);
        let blocks: Vec<(String, String)> = p
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Block(b) => Some((b.name.clone(), b.symbol.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            blocks,
            vec![
                ("".into(), "mirror".into()),
                ("start".into(), "mirror".into()),
                ("start".into(), "guest".into())
            ]
        );
    }

    #[test]
    fn old_fence_forms() {
        let p = parse("<``` a b\n+ x .true\n<```>\n");
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        assert_eq!(p.items.len(), 2);
    }

    #[test]
    fn values_and_comments() {
        let a = attrs("``` a b\n: .host localhost:8578, resolve, pull # trailing\n: x .text http://h/p <why> tail\n```\n");
        assert_eq!(a[0].ty.value, "host");
        assert_eq!(a[0].value.value, "localhost:8578, resolve, pull");
        assert_eq!(a[0].value.span.col, 9);
        assert_eq!(a[1].name.as_ref().unwrap().value, "x");
        assert_eq!(a[1].value.value, "http://h/p   tail");
    }

    #[test]
    fn unclosed_fence() {
        let p = parse("text\n``` a b\n+ x .true\n");
        assert_eq!(p.diagnostics.len(), 1);
        assert_eq!(p.diagnostics[0].span.line, 2);
        assert!(p.diagnostics[0].message.contains("never closed"));
    }

    #[test]
    fn bad_lines() {
        let p = parse("``` a b\nhello\n+ debug\n: a b c .int 1\n: , .x\n```\n");
        let lines: Vec<u32> = p.diagnostics.iter().map(|d| d.span.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5]);
    }
}
