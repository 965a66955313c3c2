//! The typed context a sequence of plugin calls runs over.

use std::path::{Path, PathBuf};

use crate::value::{Props, Value};

/// What one call hands to the next.
///
/// `vars` are the block's control values (`: work_dir .symbol ...` before any `+`), the same for
/// every call of the block. `values` is what earlier calls left for later ones (a token, a
/// digest); a call reads them and adds its own. `base_dir` anchors relative paths.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub vars: Props,
    pub values: Props,
    pub base_dir: PathBuf,
    /// How many calls have run in this context, for logs and tests.
    pub calls_run: u64,
}

impl Context {
    pub fn new(base_dir: impl Into<PathBuf>) -> Self {
        Self {
            base_dir: base_dir.into(),
            ..Self::default()
        }
    }

    /// A value that earlier calls left, else the block's control value of that name.
    pub fn lookup(&self, name: &str) -> Option<&Value> {
        self.values.get(name).or_else(|| self.vars.get(name))
    }

    pub fn lookup_str(&self, name: &str) -> Option<&str> {
        self.lookup(name).and_then(Value::as_str)
    }

    /// The directory named by control value `name` (relative ones against `base_dir`), if set.
    pub fn dir(&self, name: &str) -> Option<PathBuf> {
        self.lookup_str(name).map(|d| self.resolve(Path::new(d)))
    }

    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }
}
