//! The layers acr appends: where they come from, their digest triple, and the deterministic
//! packing of a directory.
//!
//! A layer is known by three facts a manifest and a config need: the digest and size of its
//! gzip bytes (the blob clients fetch) and the digest of the uncompressed tar (the config's
//! `diff_id`). Sources that acr can read (a directory, a `.tar.gz` file, a `data:` location)
//! are read when the pipeline is compiled, so a bad one is a diagnostic and the digests never
//! depend on when a request came. An `http(s)://` source is fetched at its first use and must
//! declare both digests; its bytes are checked against them.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::injection::Content;
use crate::oci::{copy_hashing, Digest, Platform};

/// The largest `data:` layer acr takes (decoded), as Wave does (~10 MiB).
pub const MAX_DATA_LAYER: usize = 10 * 1024 * 1024;

/// The largest directory acr packs into a layer held in memory.
pub const MAX_PACKED_DIR: u64 = 256 * 1024 * 1024;

/// The digest triple of a packed or read layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub gzip: Bytes,
    pub gzip_digest: Digest,
    pub tar_digest: Digest,
}

impl Packed {
    /// The one-line JSON `acr layer pack` prints (`location` is a `data:` URL when asked).
    pub fn json(&self, with_location: bool) -> serde_json::Value {
        let mut v = serde_json::json!({
            "gzipDigest": self.gzip_digest.to_string(),
            "gzipSize": self.gzip.len(),
            "tarDigest": self.tar_digest.to_string(),
        });
        if with_location {
            v["location"] = serde_json::Value::String(format!(
                "data:application/gzip;base64,{}",
                base64::engine::general_purpose::STANDARD.encode(&self.gzip)
            ));
        }
        v
    }
}

/// The most files a directory layer may hold.
pub const MAX_PACKED_FILES: usize = 100_000;

/// One file of a directory to pack: its path in the layer, where it is, and its metadata.
pub struct DirEntry {
    rel: PathBuf,
    full: PathBuf,
    meta: std::fs::Metadata,
}

/// The files under `dir`, sorted by their path in the layer. Stops (with an error) as soon
/// as the directory is too large to pack, so naming `/` by mistake costs little.
pub fn scan_dir(dir: &Path) -> io::Result<Vec<DirEntry>> {
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let mut entries = Vec::new();
    let mut total = 0u64;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(dir.join(&rel))? {
            let entry = entry?;
            let rel_path = rel.join(entry.file_name());
            let full = entry.path();
            let meta = std::fs::symlink_metadata(&full)?;
            let ty = meta.file_type();
            if ty.is_dir() {
                stack.push(rel_path);
                continue;
            }
            // Sockets, fifos and devices have no place in a layer acr builds.
            if !(ty.is_file() || ty.is_symlink()) {
                continue;
            }
            total += meta.len();
            if total > MAX_PACKED_DIR || entries.len() >= MAX_PACKED_FILES {
                return Err(io::Error::other(format!(
                    "{} holds more than {} MiB or {MAX_PACKED_FILES} files; a directory layer is packed in memory: pack it with `acr layer pack DIR -o FILE` and name the .tar.gz",
                    dir.display(),
                    MAX_PACKED_DIR / (1024 * 1024)
                )));
            }
            entries.push(DirEntry {
                rel: rel_path,
                full,
                meta,
            });
        }
    }
    entries.sort_by(|a, b| {
        a.rel
            .as_os_str()
            .as_encoded_bytes()
            .cmp(b.rel.as_os_str().as_encoded_bytes())
    });
    Ok(entries)
}

/// Packs `dir` into a gzipped tar that is the same for the same files on any machine: regular
/// files and symlinks only (no directory entries, so the image's own directories keep their
/// owners and modes), sorted by path, owner root (0:0), mtime 0, the file's permission bits,
/// gzip without a name or a time.
pub fn pack_dir(dir: &Path) -> io::Result<Packed> {
    pack_entries(&scan_dir(dir)?)
}

fn pack_entries(entries: &[DirEntry]) -> io::Result<Packed> {
    let mut tar_hash = HashingWriter::new(Vec::new());
    {
        let mut builder = tar::Builder::new(&mut tar_hash);
        builder.mode(tar::HeaderMode::Deterministic);
        for DirEntry { rel, full, meta } in entries {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            let _ = header.set_username("root");
            let _ = header.set_groupname("root");
            header.set_mode(permission_bits(meta));
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(full)?;
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, rel, &target)?;
            } else {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(meta.len());
                let file = std::fs::File::open(full)?;
                // A file that grew since it was listed: only the listed bytes.
                builder.append_data(&mut header, rel, file.take(meta.len()))?;
            }
        }
        builder.finish()?;
    }
    let (tar, tar_digest) = tar_hash.finish();
    let gzip = gzip(&tar)?;
    Ok(Packed {
        gzip_digest: Digest::of(&gzip),
        gzip: Bytes::from(gzip),
        tar_digest,
    })
}

fn permission_bits(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

/// gzip with no file name, mtime 0 and a fixed level: the same bytes every time.
fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::new(6));
    enc.write_all(data)?;
    enc.finish()
}

/// Reads a gzipped tar: its digest and the digest of what it unpacks to.
pub fn read_gzip(gzip: Bytes) -> io::Result<Packed> {
    let tar_digest = gunzip_digest(&gzip[..])?;
    Ok(Packed {
        gzip_digest: Digest::of(&gzip),
        gzip,
        tar_digest,
    })
}

/// The sha256 of what a gzip stream unpacks to (the layer's `diff_id`).
pub fn gunzip_digest(reader: impl Read) -> io::Result<Digest> {
    gunzip_digest_limited(reader, u64::MAX).map(|(digest, _)| digest)
}

/// [`gunzip_digest`] for bytes a client sent: refuses once the inflated stream passes `limit`
/// bytes (a few MiB of gzip can inflate to gigabytes). Returns the digest and the inflated size.
pub fn gunzip_digest_limited(reader: impl Read, limit: u64) -> io::Result<(Digest, u64)> {
    hash_stream(flate2::read::MultiGzDecoder::new(reader), limit)
}

/// The sha256 and length of what `reader` yields; an error once it passes `limit` bytes.
fn hash_stream(reader: impl Read, limit: u64) -> io::Result<(Digest, u64)> {
    copy_hashing(reader, io::sink(), limit).map_err(|e| match e.kind() {
        io::ErrorKind::FileTooLarge => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it inflates to more than {} MiB", limit / (1024 * 1024)),
        ),
        _ => e,
    })
}

/// The digests and size of a `.tar.gz` file, streamed (the file may be large).
pub fn read_file(path: &Path) -> io::Result<(Digest, u64, Digest)> {
    let (gzip_digest, size) = hash_stream(std::fs::File::open(path)?, u64::MAX)?;
    let tar_digest = gunzip_digest(std::fs::File::open(path)?)
        .map_err(|e| io::Error::other(format!("{} is not a gzipped tar: {e}", path.display())))?;
    Ok((gzip_digest, size, tar_digest))
}

/// Decodes a `data:` location: `data:BASE64` (as Wave writes it) or
/// `data:[MEDIA-TYPE][;base64],DATA`.
pub fn decode_data(location: &str) -> Result<Bytes, String> {
    let rest = location
        .strip_prefix("data:")
        .ok_or_else(|| "a data location starts with `data:`".to_string())?;
    let (meta, payload) = match rest.split_once(',') {
        Some((meta, payload)) => (meta, payload),
        None => (";base64", rest),
    };
    if !meta.ends_with(";base64") {
        return Err("a data: layer must be base64 (`data:application/gzip;base64,...`)".into());
    }
    // 4 base64 characters carry 3 bytes: refuse before decoding what is too large.
    if payload.len() / 4 * 3 > MAX_DATA_LAYER + 3 {
        return Err(format!(
            "the data: layer is larger than {} MiB; serve it from a file or an https:// location",
            MAX_DATA_LAYER / (1024 * 1024)
        ));
    }
    let clean: String = payload.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(clean.as_bytes())
        .map_err(|e| format!("the data: layer is not valid base64: {e}"))?;
    if bytes.len() > MAX_DATA_LAYER {
        return Err(format!(
            "the data: layer is larger than {} MiB",
            MAX_DATA_LAYER / (1024 * 1024)
        ));
    }
    Ok(Bytes::from(bytes))
}

/// The platform a source's name says it is for: `fusion-amd64.tar.gz`, `tools-arm64/`.
pub fn platform_from_name(source: &str) -> Option<Platform> {
    if source.starts_with("data:") {
        return None;
    }
    let name = source
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(source);
    let stem = name
        .strip_suffix(".tar.gz")
        .or_else(|| name.strip_suffix(".tgz"))
        .unwrap_or(name);
    let (_, arch) = stem.rsplit_once('-')?;
    Platform::for_arch(arch)
}

/// What compiling a source found: the layer without its per-call settings.
#[derive(Debug, Clone)]
pub struct Source {
    pub gzip_digest: Digest,
    pub gzip_size: Option<u64>,
    pub tar_digest: Option<Digest>,
    pub content: Content,
}

/// Sources read at compile time, by the text of the source and (for files and directories)
/// the state of the disk, so a reload after a change re-reads and an unchanged one does not.
type SourceTable = Mutex<HashMap<String, (Stamp, Arc<Source>)>>;

fn sources() -> &'static SourceTable {
    static SOURCES: OnceLock<SourceTable> = OnceLock::new();
    SOURCES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A source's identity on disk: for a directory, every file's path, size, mode and mtime;
/// for a file, the same of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<(PathBuf, u64, u32, i64)>);

fn stamp_of(items: impl Iterator<Item = (PathBuf, std::fs::Metadata)>) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    Stamp(
        items
            .map(|(p, m)| {
                (
                    p,
                    m.len(),
                    m.mode(),
                    m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                )
            })
            .collect(),
    )
}

/// Reads (or recalls) the source `text`, a path relative to `base` or a location. Errors say
/// what is wrong in words meant for a diagnostic.
pub fn load_source(text: &str, base: &Path) -> Result<Arc<Source>, String> {
    source(text, base, true)
}

/// The source as the last compile read it (read now if no compile has): what a request uses,
/// so serving never walks a layer directory.
pub fn compiled_source(text: &str, base: &Path) -> Result<Arc<Source>, String> {
    source(text, base, false)
}

fn source(text: &str, base: &Path, rescan: bool) -> Result<Arc<Source>, String> {
    let text = text.trim();
    if text.starts_with("https://") || text.starts_with("http://") {
        // Checked when the call is compiled with its `.digest` and `.diff-id`.
        return Ok(Arc::new(Source {
            gzip_digest: Digest::of(b""),
            gzip_size: None,
            tar_digest: None,
            content: Content::Remote(text.to_string()),
        }));
    }
    if text.starts_with("data:") {
        if let Some((_, s)) = sources().lock().ok().and_then(|m| m.get(text).cloned()) {
            return Ok(s);
        }
        let gz = decode_data(text)?;
        let packed =
            read_gzip(gz).map_err(|e| format!("the data: layer is not a gzipped tar: {e}"))?;
        let source = Arc::new(Source {
            gzip_digest: packed.gzip_digest,
            gzip_size: Some(packed.gzip.len() as u64),
            tar_digest: Some(packed.tar_digest),
            content: Content::Bytes(packed.gzip),
        });
        if let Ok(mut m) = sources().lock() {
            m.insert(text.to_string(), (Stamp(Vec::new()), source.clone()));
        }
        return Ok(source);
    }
    let path = if Path::new(text).is_absolute() {
        PathBuf::from(text)
    } else {
        base.join(text)
    };
    let key = path.display().to_string();
    if !rescan {
        // A request: the layer as the file's compile read it (compiles re-read the disk).
        if let Some((_, source)) = sources().lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(source);
        }
    }
    let meta =
        std::fs::metadata(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let entries = if meta.is_dir() {
        Some(scan_dir(&path).map_err(|e| format!("cannot pack {}: {e}", path.display()))?)
    } else {
        None
    };
    let now = match &entries {
        Some(list) => stamp_of(list.iter().map(|e| (e.rel.clone(), e.meta.clone()))),
        None => stamp_of(std::iter::once((path.clone(), meta.clone()))),
    };
    if let Some((s, source)) = sources().lock().ok().and_then(|m| m.get(&key).cloned()) {
        if s == now {
            return Ok(source);
        }
    }
    let source = if let Some(list) = &entries {
        let packed =
            pack_entries(list).map_err(|e| format!("cannot pack {}: {e}", path.display()))?;
        Source {
            gzip_digest: packed.gzip_digest,
            gzip_size: Some(packed.gzip.len() as u64),
            tar_digest: Some(packed.tar_digest),
            content: Content::Bytes(packed.gzip),
        }
    } else {
        let (gzip_digest, size, tar_digest) =
            read_file(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Source {
            gzip_digest,
            gzip_size: Some(size),
            tar_digest: Some(tar_digest),
            content: Content::File(path.clone()),
        }
    };
    let source = Arc::new(source);
    if let Ok(mut m) = sources().lock() {
        m.insert(key, (now, source.clone()));
    }
    Ok(source)
}

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }

    fn finish(self) -> (W, Digest) {
        (
            self.inner,
            Digest::from_sha256(self.hasher.finalize().into()),
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tree(dir: &Path) {
        std::fs::create_dir_all(dir.join("opt/acr")).unwrap();
        std::fs::write(dir.join("opt/acr/entry.sh"), "#!/bin/sh\nexec \"$@\"\n").unwrap();
        std::fs::set_permissions(
            dir.join("opt/acr/entry.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(dir.join("b.txt"), "b").unwrap();
        std::fs::write(dir.join("a.txt"), "a").unwrap();
    }

    #[test]
    fn packing_is_deterministic_and_sorted() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        tree(one.path());
        // Created in another order, at another time.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(two.path().join("a.txt"), "a").unwrap();
        tree(two.path());
        let p1 = pack_dir(one.path()).unwrap();
        let p2 = pack_dir(two.path()).unwrap();
        assert_eq!(p1, p2);
        assert_eq!(p1.gzip_digest, Digest::of(&p1.gzip));
        // The gzip header: no name flag, mtime 0.
        assert_eq!(&p1.gzip[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&p1.gzip[4..8], &[0, 0, 0, 0]);
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&p1.gzip[..]));
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(h.uid().unwrap(), 0);
            assert_eq!(h.mtime().unwrap(), 0);
            names.push((e.path().unwrap().display().to_string(), h.mode().unwrap()));
        }
        assert_eq!(
            names,
            vec![
                ("a.txt".to_string(), 0o644),
                ("b.txt".to_string(), 0o644),
                ("opt/acr/entry.sh".to_string(), 0o755)
            ]
        );
        let again = read_gzip(p1.gzip.clone()).unwrap();
        assert_eq!(again.tar_digest, p1.tar_digest);
    }

    #[test]
    fn data_locations() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let packed = pack_dir(dir.path()).unwrap();
        let loc = packed.json(true)["location"].as_str().unwrap().to_string();
        assert_eq!(decode_data(&loc).unwrap(), packed.gzip);
        let bare = format!("data:{}", loc.split_once(',').unwrap().1);
        assert_eq!(decode_data(&bare).unwrap(), packed.gzip);
        assert!(decode_data("data:text/plain,hello").is_err());
        assert!(decode_data("data:!!!").unwrap_err().contains("base64"));
        let huge = format!("data:{}", "A".repeat(MAX_DATA_LAYER / 3 * 4 + 64));
        assert!(decode_data(&huge).unwrap_err().contains("larger"));
    }

    #[test]
    fn platforms_from_names() {
        assert_eq!(
            platform_from_name("https://x/fusion-amd64.tar.gz").map(|p| p.architecture),
            Some("amd64".to_string())
        );
        assert_eq!(
            platform_from_name("layers/tools-arm64/").map(|p| p.architecture),
            Some("arm64".to_string())
        );
        assert!(platform_from_name("layers/my-tools").is_none());
        assert!(platform_from_name("data:abc-amd64").is_none());
    }
}
