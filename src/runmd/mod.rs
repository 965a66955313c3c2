//! The runmd language: markdown whose fenced blocks declare plugin pipelines.
//!
//! `parser` turns text into items (block headers and attribute lines) with spans; `lexer` is
//! the token set of one line; `diagnostics` renders what went wrong. Meaning (which attribute
//! may follow which, what a plugin accepts) is decided by `world::compile`.

pub mod diagnostics;
pub mod lexer;
pub mod parser;
pub mod value;

pub use diagnostics::{Diagnostic, Report, Span};
pub use parser::{parse, AttrLine, BlockHeader, Item, Op, Parsed, Spanned};
