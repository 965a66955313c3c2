//! `.install FILE`: makes `{work_dir}/FILE` the newest copy of `FILE`.
//!
//! - `{src_dir}/FILE` and `{work_dir}/FILE` are one file (the same path, or a link to it):
//!   nothing to copy; the call confirms the file is there.
//! - `{src_dir}/FILE` exists and is newer than `{work_dir}/FILE` (or that is missing): it is
//!   copied, with its permission bits, through a temporary file renamed into place, so a reader
//!   never sees half a file (`access_token` stays 0600).
//! - Otherwise `{work_dir}/FILE` is already the newest copy (in the default pipeline,
//!   `.login-acr` has just written its refresh token there, where `.login access_token` reads
//!   it): the call confirms it and copies nothing, so an old file in `src_dir` never replaces a
//!   fresh one.
//!
//! Neither file there is an error that names both paths. The path installed is left in the
//! context value `installed`.

use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use crate::call::PluginError;
use crate::context::Context;
use crate::plugin::{run_fn, InputError, Invocation, PluginSpec};

pub const SPEC: PluginSpec = PluginSpec::new(
    "install",
    "put the newest copy of a file from the block's src_dir in its work_dir",
)
.input("a file name relative to src_dir")
.check(check)
.run(run_fn!(run));

fn check(input: &str) -> Result<(), InputError> {
    let path = Path::new(input.trim());
    if path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(
            InputError::new(format!("`{input}` must stay inside src_dir"))
                .hint("name a file relative to src_dir, without `..`"),
        );
    }
    Ok(())
}

/// What `.install` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// Copied from src_dir.
    Copied,
    /// work_dir already held the newest copy (or src_dir and work_dir are one file).
    AlreadyThere,
}

/// Why `.install` failed, with both paths.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("neither {from} nor {to} exists")]
    Missing { from: String, to: String },
    #[error("{to} is not a regular file")]
    NotAFile { to: String },
    #[error("cannot copy {from} to {to}: {source}")]
    Copy {
        from: String,
        to: String,
        source: std::io::Error,
    },
}

/// Installs `from` at `to` (see the module documentation).
pub fn install(from: &Path, to: &Path) -> Result<Installed, InstallError> {
    let copy_error = |source| InstallError::Copy {
        from: from.display().to_string(),
        to: to.display().to_string(),
        source,
    };
    let source = std::fs::metadata(from).ok().filter(|m| m.is_file());
    let target = std::fs::metadata(to).ok();
    if let Some(t) = &target {
        if !t.is_file() {
            return Err(InstallError::NotAFile {
                to: to.display().to_string(),
            });
        }
    }
    let same_file = match (&source, &target) {
        (Some(_), Some(_)) => {
            use std::os::unix::fs::MetadataExt;
            let (s, t) = (std::fs::metadata(from), std::fs::metadata(to));
            matches!((s, t), (Ok(s), Ok(t)) if s.dev() == t.dev() && s.ino() == t.ino())
        }
        _ => false,
    };
    let modified = |m: &std::fs::Metadata| m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    match (source, target) {
        (Some(_), Some(_)) if same_file => Ok(Installed::AlreadyThere),
        (Some(s), Some(t)) if modified(&s) <= modified(&t) => Ok(Installed::AlreadyThere),
        (Some(s), _) => {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(copy_error)?;
            }
            let tmp = temporary_beside(to);
            let copied = std::fs::copy(from, &tmp)
                .and_then(|_| std::fs::set_permissions(&tmp, s.permissions()))
                .and_then(|_| std::fs::rename(&tmp, to));
            if let Err(e) = copied {
                let _ = std::fs::remove_file(&tmp);
                return Err(copy_error(e));
            }
            Ok(Installed::Copied)
        }
        (None, Some(_)) => Ok(Installed::AlreadyThere),
        (None, None) => Err(InstallError::Missing {
            from: from.display().to_string(),
            to: to.display().to_string(),
        }),
    }
}

fn temporary_beside(to: &Path) -> PathBuf {
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    to.with_file_name(format!(".{name}.install-{}", std::process::id()))
}

async fn run(call: &Invocation, cx: &mut Context) -> Result<(), PluginError> {
    let file = call.input.trim();
    let src_dir = cx.dir("src_dir").unwrap_or_else(|| cx.base_dir.clone());
    let work_dir = cx.dir("work_dir").ok_or_else(|| {
        PluginError::failed(
            call,
            "no work_dir: add `: work_dir .symbol DIR` to the block",
        )
    })?;
    let (from, to) = (src_dir.join(file), work_dir.join(file));
    let target = to.clone();
    let done = tokio::task::spawn_blocking(move || install(&from, &target))
        .await
        .map_err(|e| PluginError::failed(call, format!("install task: {e}")))?
        .map_err(|e| PluginError::failed(call, e.to_string()))?;
    match done {
        Installed::Copied => tracing::info!(file = %to.display(), "installed"),
        Installed::AlreadyThere => {
            tracing::info!(file = %to.display(), "already installed (the newest copy)")
        }
    }
    cx.values.set(
        "installed",
        crate::value::Value::Symbol(to.display().to_string()),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    fn set_mtime(p: &Path, t: SystemTime) {
        let f = std::fs::File::options().write(true).open(p).unwrap();
        f.set_modified(t).unwrap();
    }

    #[test]
    fn copies_a_newer_source_with_its_mode() {
        let d = tempfile::tempdir().unwrap();
        let (from, to) = (d.path().join("src/t"), d.path().join("work/t"));
        std::fs::create_dir_all(from.parent().unwrap()).unwrap();
        std::fs::write(&from, "fresh").unwrap();
        std::fs::set_permissions(&from, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(install(&from, &to).unwrap(), Installed::Copied);
        assert_eq!(std::fs::read_to_string(&to).unwrap(), "fresh");
        let mode = std::fs::metadata(&to).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Nothing left beside it.
        let names: Vec<_> = std::fs::read_dir(to.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn keeps_a_newer_target_and_the_same_file() {
        let d = tempfile::tempdir().unwrap();
        let (from, to) = (d.path().join("old"), d.path().join("new"));
        std::fs::write(&from, "stale").unwrap();
        std::fs::write(&to, "fresh").unwrap();
        set_mtime(&from, SystemTime::now() - Duration::from_secs(3600));
        assert_eq!(install(&from, &to).unwrap(), Installed::AlreadyThere);
        assert_eq!(std::fs::read_to_string(&to).unwrap(), "fresh");
        // One file under two names: never truncated by copying it onto itself.
        assert_eq!(install(&to, &to).unwrap(), Installed::AlreadyThere);
        assert_eq!(std::fs::read_to_string(&to).unwrap(), "fresh");
        // Only the target: confirmed.
        let gone = d.path().join("gone");
        assert_eq!(install(&gone, &to).unwrap(), Installed::AlreadyThere);
    }

    #[test]
    fn neither_file_is_an_error_naming_both() {
        let d = tempfile::tempdir().unwrap();
        let e = install(&d.path().join("a"), &d.path().join("b")).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("/a") && text.contains("/b"), "{text}");
        std::fs::create_dir(d.path().join("dir")).unwrap();
        let e = install(&d.path().join("a"), &d.path().join("dir")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
}
