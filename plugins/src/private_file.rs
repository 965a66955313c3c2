//! Files only their owner may read (tokens, credentials): written whole through a temporary
//! file of mode 0600 beside them, synced, then renamed into place, so a reader never sees
//! half a file and no other user ever sees one at all.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

/// Writes `bytes` to `path` (mode 0600), creating its directory. `modified`, when given,
/// becomes the file's mtime (a container token keeps its expiry there).
pub fn write_private(path: &Path, bytes: &[u8], modified: Option<SystemTime>) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    if let Some(at) = modified {
        f.set_modified(at)?;
    }
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_written_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/access_token");
        write_private(&p, b"t1", None).unwrap();
        write_private(&p, b"t2", None).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "t2");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
