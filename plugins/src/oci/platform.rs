//! Platforms as images name them (`linux/amd64`, `linux/arm64/v8`, `linux/arm/v7`), with the
//! spellings runtimes use for the same thing made equal (`x86_64` is `amd64`, `aarch64` is
//! `arm64`, `arm64/v8` is `arm64`, `arm` is `arm/v7`), as containerd normalizes them.
//!
//! The one platform type: `.platform` and `.inject-layer` in a pipeline, a container token's
//! `containerPlatform`, `.teleport`, and `acr warm --platform` all parse and match with it, so
//! the same words choose the same images everywhere.

use std::fmt;

/// The architectures Go (and so every image toolchain) names; anything else is a typo.
const ARCHITECTURES: &[&str] = &[
    "amd64", "arm64", "arm", "386", "ppc64le", "ppc64", "s390x", "riscv64", "mips64le", "mips64",
    "mipsle", "mips", "loong64", "wasm",
];

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/ARCH` for a known architecture name (also `x86_64`, `aarch64`).
    pub fn for_arch(arch: &str) -> Option<Self> {
        let arch = normalise_arch(arch);
        ARCHITECTURES.contains(&arch.as_str()).then(|| Self {
            os: "linux".into(),
            architecture: arch,
            variant: None,
        })
    }

    /// Parses `OS/ARCH[/VARIANT]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.trim().split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => {
                return Err(format!(
                    "`{text}` is not a platform: write OS/ARCH[/VARIANT], e.g. linux/amd64"
                ))
            }
        };
        let architecture = normalise_arch(arch);
        if !ARCHITECTURES.contains(&architecture.as_str()) {
            return Err(format!(
                "unknown architecture `{arch}` in platform `{text}` (known: {})",
                ARCHITECTURES.join(", ")
            ));
        }
        if os.is_empty()
            || !os
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(format!("`{os}` is not an operating system name"));
        }
        Ok(Self {
            os: os.to_string(),
            variant: normalise_variant(&architecture, variant),
            architecture,
        })
    }

    /// The platform of an index entry's `platform` object or of an image config.
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        let os = v.get("os")?.as_str()?.to_ascii_lowercase();
        let arch = v.get("architecture")?.as_str()?;
        let architecture = normalise_arch(arch);
        let variant = v.get("variant").and_then(|x| x.as_str());
        Some(Self {
            os,
            variant: normalise_variant(&architecture, variant),
            architecture,
        })
    }

    /// The `unknown/unknown` of attestation manifests in an index: no image to run.
    pub fn is_unknown(&self) -> bool {
        self.os == "unknown" || self.architecture == "unknown"
    }

    /// Whether an image of platform `image` takes a layer meant for `self`: the same os and
    /// architecture, and the same variant when both name one.
    pub fn admits(&self, image: &Platform) -> bool {
        self.os == image.os
            && self.architecture == image.architecture
            && match (&self.variant, &image.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn normalise_arch(arch: &str) -> String {
    match arch.to_ascii_lowercase().as_str() {
        "x86_64" | "x86-64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        "i386" | "i686" => "386".into(),
        "armhf" | "armel" => "arm".into(),
        other => other.to_string(),
    }
}

/// `arm64/v8` is plain arm64; `arm` without a variant (or with an empty one, `linux/arm/`)
/// means v7.
fn normalise_variant(arch: &str, variant: Option<&str>) -> Option<String> {
    let variant = variant.filter(|v| !v.is_empty());
    match (arch, variant) {
        ("arm64", Some("v8")) => None,
        ("arm", None) => Some("v7".into()),
        (_, v) => v.filter(|v| !v.is_empty()).map(String::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_are_equal() {
        let a = Platform::parse("linux/x86_64").unwrap();
        assert_eq!(a.to_string(), "linux/amd64");
        let b = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(b, Platform::parse("linux/aarch64").unwrap());
        assert_eq!(
            Platform::parse("linux/arm").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert!(Platform::parse("linux/mips99")
            .unwrap_err()
            .contains("mips99"));
        assert!(Platform::parse("amd64").is_err());
        // Found by fuzzing: an empty variant is no variant, so it prints and parses back the same.
        assert_eq!(
            Platform::parse("linux/arm/").unwrap(),
            Platform::parse("linux/arm").unwrap()
        );
        let img = Platform::from_json(
            &serde_json::json!({"os":"linux","architecture":"arm64","variant":"v8"}),
        )
        .unwrap();
        assert!(b.admits(&img));
        assert!(!a.admits(&img));
        assert!(
            Platform::from_json(&serde_json::json!({"os":"unknown","architecture":"unknown"}))
                .unwrap()
                .is_unknown()
        );
    }

    /// `acr warm --platform` and `.platform` parse with this one function: the spellings a
    /// runtime uses choose the same index entries as the canonical ones.
    #[test]
    fn spellings_choose_the_same_entries() {
        let entries = [
            serde_json::json!({"os":"linux","architecture":"amd64"}),
            serde_json::json!({"os":"linux","architecture":"arm64","variant":"v8"}),
            serde_json::json!({"os":"linux","architecture":"arm","variant":"v7"}),
            serde_json::json!({"os":"linux","architecture":"arm","variant":"v6"}),
        ]
        .map(|e| Platform::from_json(&e).unwrap());
        let chosen = |want: &str| -> Vec<usize> {
            let want = Platform::parse(want).unwrap();
            (0..entries.len())
                .filter(|i| want.admits(&entries[*i]))
                .collect()
        };
        for (a, b) in [
            ("linux/x86_64", "linux/amd64"),
            ("linux/X86-64", "linux/amd64"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/arm", "linux/arm/v7"),
        ] {
            assert_eq!(chosen(a), chosen(b), "{a} and {b}");
        }
        assert_eq!(chosen("linux/x86_64"), [0]);
        assert_eq!(chosen("linux/arm/v6"), [3]);
    }
}
