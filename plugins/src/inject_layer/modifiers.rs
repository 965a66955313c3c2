//! What a call of `.inject-layer` may say: its input, checked when the file is compiled, and
//! its modifiers (`.entrypoint`, `.cmd`, `.env`, `.working-dir`, `.platform`, `.digest`,
//! `.diff-id`).

use super::layer;
use crate::oci::{Digest, Platform};
use crate::plugin::{symbol_modifier, symbol_prop, InputError, ModifierProps, ModifierSpec};

pub(super) const MODIFIERS: &[ModifierSpec] = &[
    ModifierSpec {
        name: "entrypoint",
        usage: ".entrypoint /opt/tool/entry.sh  (or a JSON list)",
        parse: words_modifier,
    },
    ModifierSpec {
        name: "cmd",
        usage: ".cmd ARG...  (or a JSON list)",
        parse: words_modifier,
    },
    ModifierSpec {
        name: "env",
        usage: ".env KEY=VALUE",
        parse: env_modifier,
    },
    ModifierSpec {
        name: "working-dir",
        usage: ".working-dir /dir",
        parse: symbol_modifier,
    },
    ModifierSpec {
        name: "platform",
        usage: ".platform linux/arm64",
        parse: platform_modifier,
    },
    ModifierSpec {
        name: "digest",
        usage: ".digest sha256:...  (of the .tar.gz)",
        parse: digest_modifier,
    },
    ModifierSpec {
        name: "diff-id",
        usage: ".diff-id sha256:...  (of the uncompressed tar)",
        parse: digest_modifier,
    },
];

/// Reads the source when the file is compiled: a directory is packed, a file or `data:` is
/// read, so a bad source is a diagnostic and the digests are fixed from then on.
pub(super) fn check(input: &str) -> Result<(), InputError> {
    let base = std::env::current_dir().unwrap_or_default();
    layer::load_source(input, &base)
        .map(|_| ())
        .map_err(|e| InputError::new(e).hint("a layer is a directory, a .tar.gz file, data:BASE64 or an https:// URL with `.digest` and `.diff-id`"))
}

fn words_modifier(modifier: &str, _name: Option<&str>, value: &str) -> ModifierProps {
    words(value).map_err(InputError::new)?;
    Ok(symbol_prop(modifier, value))
}

/// `a b c` or `["a", "b c"]`.
pub fn words(value: &str) -> Result<Vec<String>, String> {
    let v = value.trim();
    if v.is_empty() {
        return Err("needs a value".into());
    }
    if v.starts_with('[') {
        return serde_json::from_str::<Vec<String>>(v)
            .map_err(|e| format!("`{v}` is not a JSON list of strings: {e}"));
    }
    Ok(v.split_whitespace().map(String::from).collect())
}

fn env_modifier(modifier: &str, _name: Option<&str>, value: &str) -> ModifierProps {
    let v = value.trim();
    match v.split_once('=') {
        Some((k, _)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
            Ok(symbol_prop(modifier, v))
        }
        _ => Err(InputError::new(format!("`{v}` is not KEY=VALUE")).hint("write `.env KEY=VALUE`")),
    }
}

fn platform_modifier(modifier: &str, _name: Option<&str>, value: &str) -> ModifierProps {
    Platform::parse(value).map_err(InputError::new)?;
    Ok(symbol_prop(modifier, value.trim()))
}

fn digest_modifier(modifier: &str, _name: Option<&str>, value: &str) -> ModifierProps {
    Digest::parse(value.trim()).map_err(|e| InputError::new(format!("`{value}`: {e}")))?;
    Ok(symbol_prop(modifier, value.trim()))
}

#[cfg(test)]
mod tests {
    use super::words;

    #[test]
    fn words_are_a_json_list_or_split_on_spaces() {
        assert_eq!(words(r#"["/bin/sh", "-c"]"#).unwrap(), ["/bin/sh", "-c"]);
        assert_eq!(words("/bin/sh -c").unwrap(), ["/bin/sh", "-c"]);
        assert!(words("[1]").is_err());
    }
}
