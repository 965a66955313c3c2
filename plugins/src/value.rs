//! The values a runmd file can hold, and the ordered property lists they live in.
//!
//! The runtime parses these from text; plugins read them. Keeping them here (the lower crate)
//! lets both sides share one type without the plugins learning anything about the parser.

use std::collections::BTreeSet;
use std::fmt;

/// One runmd value: what a built-in type token (`.int`, `.symbol`, ...) produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Empty,
    Bool(bool),
    Int(i64),
    IntPair(i64, i64),
    IntRange(i64, i64, i64),
    Float(f64),
    FloatPair(f64, f64),
    FloatRange(f64, f64, f64),
    Symbol(String),
    Text(String),
    Complex(BTreeSet<String>),
    Binary(Vec<u8>),
}

impl Value {
    /// The value as text, for symbols and text; `None` for every other kind.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Symbol(s) | Value::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Empty => f.write_str(".empty"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::IntPair(a, b) => write!(f, "{a}, {b}"),
            Value::IntRange(a, b, c) => write!(f, "{a}, {b}, {c}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::FloatPair(a, b) => write!(f, "{a}, {b}"),
            Value::FloatRange(a, b, c) => write!(f, "{a}, {b}, {c}"),
            Value::Symbol(s) => f.write_str(s),
            Value::Text(s) => write!(f, "{s:?}"),
            Value::Complex(set) => {
                f.write_str("{")?;
                for (i, s) in set.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(s)?;
                }
                f.write_str("}")
            }
            Value::Binary(b) => write!(f, "<{} bytes>", b.len()),
        }
    }
}

/// An ordered list of named values. A name may repeat: `get` returns the first value, `all`
/// every one in file order (the runmd way of writing a list is to repeat a property).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Props {
    entries: Vec<(String, Value)>,
}

impl Props {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, name: impl Into<String>, value: Value) {
        self.entries.push((name.into(), value));
    }

    /// Replaces every value of `name` with one value.
    pub fn set(&mut self, name: impl Into<String>, value: Value) {
        let name = name.into();
        self.entries.retain(|(n, _)| *n != name);
        self.entries.push((name, value));
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds every entry of `other` after this list's own.
    pub fn extend_from(&mut self, other: &Props) {
        self.entries.extend(other.entries.iter().cloned());
    }
}
