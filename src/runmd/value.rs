//! The built-in value types: `.empty .bool .true .false .enable .disable .int .int_pair
//! .int_range .float .float_pair .float_range .symbol .text .complex .bin .base64`.
//!
//! Unlike the old tool, a bad number is an error, not a silent 0.

use std::collections::BTreeSet;

use acr_plugins::Value;
use base64::Engine as _;

/// Every built-in type name, for suggestions.
pub const BUILTIN_TYPES: &[&str] = &[
    "empty",
    "bool",
    "true",
    "false",
    "enable",
    "disable",
    "int",
    "int_pair",
    "int_range",
    "float",
    "float_pair",
    "float_range",
    "symbol",
    "text",
    "complex",
    "bin",
    "base64",
];

pub fn is_builtin(ty: &str) -> bool {
    BUILTIN_TYPES.contains(&ty)
}

/// Parses `value` as the built-in type `ty`. `Err` carries a message and a hint.
pub fn parse_builtin(ty: &str, value: &str) -> Result<Value, (String, String)> {
    let v = value.trim();
    match ty {
        "empty" => {
            if v.is_empty() {
                Ok(Value::Empty)
            } else {
                Err((
                    "`.empty` takes no value".into(),
                    "remove the text after `.empty`, or use `.symbol`".into(),
                ))
            }
        }
        "true" | "enable" => no_value(ty, v, Value::Bool(true)),
        "false" | "disable" => no_value(ty, v, Value::Bool(false)),
        "bool" => match v {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err((
                format!("`{v}` is not a bool"),
                "write `.bool true` or `.bool false` (or `.true` / `.false`)".into(),
            )),
        },
        "int" => int(v).map(Value::Int),
        "int_pair" => ints::<2>(ty, v).map(|[a, b]| Value::IntPair(a, b)),
        "int_range" => ints::<3>(ty, v).map(|[a, b, c]| Value::IntRange(a, b, c)),
        "float" => float(v).map(Value::Float),
        "float_pair" => floats::<2>(ty, v).map(|[a, b]| Value::FloatPair(a, b)),
        "float_range" => floats::<3>(ty, v).map(|[a, b, c]| Value::FloatRange(a, b, c)),
        "symbol" => {
            if v.is_empty() {
                Err((
                    "`.symbol` needs a value".into(),
                    "write `.symbol some-name`".into(),
                ))
            } else {
                Ok(Value::Symbol(v.to_string()))
            }
        }
        "text" => Ok(Value::Text(v.to_string())),
        "complex" => Ok(Value::Complex(
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect::<BTreeSet<_>>(),
        )),
        "bin" | "base64" => base64::engine::general_purpose::STANDARD
            .decode(v)
            .map(Value::Binary)
            .map_err(|e| {
                (
                    format!("not valid base64: {e}"),
                    "`.base64` takes standard base64 with padding".into(),
                )
            }),
        other => Err((format!("`.{other}` is not a built-in type"), String::new())),
    }
}

fn no_value(ty: &str, v: &str, value: Value) -> Result<Value, (String, String)> {
    if v.is_empty() {
        Ok(value)
    } else {
        Err((
            format!("`.{ty}` takes no value"),
            format!("write `.{ty}` alone, or `.bool {v}`"),
        ))
    }
}

fn int(v: &str) -> Result<i64, (String, String)> {
    v.parse().map_err(|_| {
        (
            format!("`{v}` is not an integer"),
            "write a whole number such as `.int 5`".into(),
        )
    })
}

fn float(v: &str) -> Result<f64, (String, String)> {
    match v.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(f),
        _ => Err((
            format!("`{v}` is not a number"),
            "write a number such as `.float 0.5`".into(),
        )),
    }
}

fn parts<'a, const N: usize>(ty: &str, v: &'a str) -> Result<[&'a str; N], (String, String)> {
    let items: Vec<&str> = v.split(',').map(str::trim).collect();
    <[&str; N]>::try_from(items).map_err(|items| {
        (
            format!(
                "`.{ty}` takes {N} comma-separated numbers, found {}",
                items.len()
            ),
            format!("write e.g. `.{ty} {}`", vec!["1"; N].join(", ")),
        )
    })
}

fn ints<const N: usize>(ty: &str, v: &str) -> Result<[i64; N], (String, String)> {
    let p = parts::<N>(ty, v)?;
    let mut out = [0; N];
    for (o, s) in out.iter_mut().zip(p) {
        *o = int(s)?;
    }
    Ok(out)
}

fn floats<const N: usize>(ty: &str, v: &str) -> Result<[f64; N], (String, String)> {
    let p = parts::<N>(ty, v)?;
    let mut out = [0.0; N];
    for (o, s) in out.iter_mut().zip(p) {
        *o = float(s)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_type() {
        assert_eq!(parse_builtin("empty", ""), Ok(Value::Empty));
        assert_eq!(parse_builtin("true", ""), Ok(Value::Bool(true)));
        assert_eq!(parse_builtin("enable", ""), Ok(Value::Bool(true)));
        assert_eq!(parse_builtin("false", ""), Ok(Value::Bool(false)));
        assert_eq!(parse_builtin("disable", ""), Ok(Value::Bool(false)));
        assert_eq!(parse_builtin("bool", "false"), Ok(Value::Bool(false)));
        assert_eq!(parse_builtin("int", "-7"), Ok(Value::Int(-7)));
        assert_eq!(parse_builtin("int_pair", "1, 2"), Ok(Value::IntPair(1, 2)));
        assert_eq!(
            parse_builtin("int_range", "1,2,3"),
            Ok(Value::IntRange(1, 2, 3))
        );
        assert_eq!(parse_builtin("float", "0.5"), Ok(Value::Float(0.5)));
        assert_eq!(
            parse_builtin("float_pair", "1.5, 2"),
            Ok(Value::FloatPair(1.5, 2.0))
        );
        assert_eq!(
            parse_builtin("float_range", "0, 0.5, 1"),
            Ok(Value::FloatRange(0.0, 0.5, 1.0))
        );
        assert_eq!(
            parse_builtin("symbol", "abc"),
            Ok(Value::Symbol("abc".into()))
        );
        assert_eq!(
            parse_builtin("text", "a b c"),
            Ok(Value::Text("a b c".into()))
        );
        assert_eq!(
            parse_builtin("complex", "b, a, b"),
            Ok(Value::Complex(["a".to_string(), "b".to_string()].into()))
        );
        assert_eq!(
            parse_builtin("base64", "aGk="),
            Ok(Value::Binary(b"hi".to_vec()))
        );
        assert_eq!(
            parse_builtin("bin", "aGk="),
            Ok(Value::Binary(b"hi".to_vec()))
        );
    }

    #[test]
    fn bad_values_are_errors() {
        for (ty, v) in [
            ("int", "abc"),
            ("int", ""),
            ("int_pair", "1"),
            ("int_range", "1,2"),
            ("float", "nan"),
            ("float_pair", "x, 1"),
            ("bool", "yes"),
            ("true", "false"),
            ("empty", "x"),
            ("symbol", ""),
            ("base64", "!!"),
        ] {
            assert!(parse_builtin(ty, v).is_err(), ".{ty} {v}");
        }
    }
}
