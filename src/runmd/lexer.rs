//! The tokens of one runmd line.
//!
//! Only lines inside runmd fences reach the lexer (see `parser`), so prose can hold any text.
//! A line is `+`/`add` or `:`/`define`, up to two identifiers (a name and a symbol), a type token
//! (`.int`, `.symbol`, or a custom attribute such as `.engine` or `.resolve`), then the value:
//! the rest of the line, taken raw by the parser.

use logos::Logos;

#[derive(Logos, Debug, Clone, Copy, PartialEq, Eq)]
#[logos(skip r"[ \t\r\f]+")]
pub enum Token {
    /// `+` or `add`: starts a new attribute.
    #[token("+")]
    #[token("add")]
    Add,
    /// `:` adds a property to the attribute before it; `define` names its own.
    #[token(":")]
    Colon,
    #[token("define")]
    Define,
    /// `# ...` and `// ...` run to the end of the line.
    #[regex(r"#[^\n]*")]
    #[regex(r"//[^\n]*")]
    Comment,
    /// `<...>` is an inline comment.
    #[regex(r"<[^>\n]*>")]
    InlineComment,
    /// `.name`: a built-in value type or a custom attribute.
    #[regex(r"\.[A-Za-z][A-Za-z0-9_-]*")]
    Type,
    /// A name or symbol.
    #[regex(r"[A-Za-z_][A-Za-z0-9;._:/@#+=$-]*")]
    Ident,
    #[token(",")]
    Comma,
}

/// A token and its byte range within the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexeme {
    pub token: Option<Token>,
    pub start: usize,
    pub end: usize,
}

/// Lexes `line` up to and including its first type token (the value after it is raw text).
/// An unrecognised character is a lexeme with `token: None`.
pub fn lex_head(line: &str) -> Vec<Lexeme> {
    let mut out = Vec::new();
    let mut lexer = Token::lexer(line);
    while let Some(result) = lexer.next() {
        let span = lexer.span();
        let token = result.ok();
        out.push(Lexeme {
            token,
            start: span.start,
            end: span.end,
        });
        if matches!(token, Some(Token::Type) | Some(Token::Comment) | None) {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(line: &str) -> Vec<Option<Token>> {
        lex_head(line).into_iter().map(|l| l.token).collect()
    }

    #[test]
    fn attribute_lines() {
        use Token::*;
        let cases: &[(&str, &[Option<Token>])] = &[
            ("+ .engine", &[Some(Add), Some(Type)]),
            ("add debug .true", &[Some(Add), Some(Ident), Some(Type)]),
            (
                ": src_dir .symbol .",
                &[Some(Colon), Some(Ident), Some(Type)],
            ),
            (
                "define address ipv6 .true",
                &[Some(Define), Some(Ident), Some(Ident), Some(Type)],
            ),
            ("# a comment", &[Some(Comment)]),
            ("// a comment", &[Some(Comment)]),
            (
                ": <why> .loop",
                &[Some(Colon), Some(InlineComment), Some(Type)],
            ),
            // `address` is an identifier, not the keyword `add` followed by text.
            ("+ address .text x", &[Some(Add), Some(Ident), Some(Type)]),
            // The value after the type is not lexed at all.
            (": .host a, b ~ !", &[Some(Colon), Some(Type)]),
            ("? oops", &[None]),
        ];
        for (line, expected) in cases {
            assert_eq!(kinds(line), *expected, "{line}");
        }
    }
}
