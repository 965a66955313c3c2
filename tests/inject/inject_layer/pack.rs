//! `acr layer pack`.

use super::*;

// ------------------------------------------------------------------------------------------
// acr layer pack

/// `acr layer pack` packs a directory deterministically: regular files and symlinks only,
/// sorted, owned by 0:0, mtime 0, the files' permission bits, gzip without name or time;
/// `-o` writes exactly the bytes the digests describe, `--location` is a `data:` URI of them,
/// and the same files elsewhere with other timestamps give the same digests.
#[test]
fn layer_pack_is_deterministic_and_writes_a_plain_sorted_tar() {
    let root = temp_dir("acr-pack-");
    let files: &[(&str, &[u8], u32)] = &[
        ("opt/acr/entry.sh", ENTRY_SH.as_bytes(), 0o755),
        ("etc/acr/note.txt", NOTE_TXT.as_bytes(), 0o644),
        ("opt/acr/bin/tool", b"tool\n", 0o750),
    ];
    let dir = make_layer_dir(root.path(), "layer", files);
    std::os::unix::fs::symlink("entry.sh", dir.join("opt/acr/run")).expect("symlink");
    // The same files, created in another order, with other timestamps.
    let mut reversed = files.to_vec();
    reversed.reverse();
    let dir2 = make_layer_dir(root.path(), "again", &reversed);
    std::os::unix::fs::symlink("entry.sh", dir2.join("opt/acr/run")).expect("symlink");
    run(
        "find",
        &[
            &dir2.to_string_lossy(),
            "-exec",
            "touch",
            "-h",
            "-d",
            "2001-02-03T04:05:06Z",
            "{}",
            "+",
        ],
    )
    .ok();

    let plain = pack(&dir, &[]);
    assert_eq!(plain.location, None, "no --location, no location");
    let (to_file, gz) = pack_to_file(&dir, &root.path().join("out.tar.gz"));
    let with_location = pack(&dir, &["--location"]);
    let elsewhere = pack(&dir2, &[]);
    assert_eq!(to_file, plain, "-o prints the same digests");
    assert_eq!(
        Packed {
            location: None,
            ..with_location.clone()
        },
        plain,
        "--location prints the same digests"
    );
    assert_eq!(
        elsewhere, plain,
        "the same files with other timestamps and creation order"
    );
    assert_eq!(pack(&dir, &[]), plain, "packing twice");

    assert_eq!(
        digest_of(&gz),
        plain.gzip_digest,
        "gzipDigest = sha256(file)"
    );
    assert_eq!(gz.len() as u64, plain.gzip_size, "gzipSize = file length");
    assert_eq!(
        diff_id_of(&gz),
        plain.tar_digest,
        "tarDigest = sha256(gunzip(file))"
    );
    let location = with_location.location.expect("--location gives a location");
    assert!(location.starts_with("data:"), "{location}");
    assert_eq!(
        data_uri_bytes(&location),
        gz,
        "the data: URI holds the .tar.gz"
    );

    // gzip header: magic, no FNAME flag, MTIME 0
    assert_eq!(&gz[..3], &[0x1f, 0x8b, 8], "gzip magic and deflate");
    assert_eq!(gz[3] & 0x08, 0, "the gzip header names a file");
    assert_eq!(&gz[4..8], &[0, 0, 0, 0], "the gzip header has an mtime");

    let entries = read_tar(&gunzip(&gz));
    let names: Vec<&str> = entries.iter().map(|e| clean_name(&e.name)).collect();
    assert_eq!(
        names,
        [
            "etc/acr/note.txt",
            "opt/acr/bin/tool",
            "opt/acr/entry.sh",
            "opt/acr/run"
        ],
        "regular files and symlinks only, sorted by path: {entries:#?}"
    );
    for e in &entries {
        assert!(!e.name.starts_with('/'), "absolute name {}", e.name);
        assert_eq!((e.uid, e.gid), (0, 0), "{}: owner", e.name);
        assert_eq!(e.mtime, 0, "{}: mtime", e.name);
    }
    for (rel, data, mode) in files {
        let e = entries
            .iter()
            .find(|e| clean_name(&e.name) == *rel)
            .expect("entry");
        assert!(e.is_file(), "{rel}: type {}", e.typeflag);
        assert_eq!(e.mode & 0o7777, *mode, "{rel}: mode {:o}", e.mode);
        assert_eq!(e.data, *data, "{rel}: content");
    }
    let link = entries
        .iter()
        .find(|e| clean_name(&e.name) == "opt/acr/run")
        .expect("symlink entry");
    assert!(link.is_symlink(), "opt/acr/run: type {}", link.typeflag);
    assert_eq!(link.linkname, "entry.sh");
}
