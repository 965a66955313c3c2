//! The injection pipelines, extra upstream images with an entrypoint, OCI layouts and bundles.

use super::*;

// ------------------------------------------------------------------------------------------
// pipelines

/// The routes of an injecting mirror: `inject` lines (`.inject-layer SRC` and its modifiers,
/// modifiers indented by two more spaces, e.g. `"  .env K=V"`) go before `.resolve` in the
/// manifests route.
pub fn inject_routes(inject: &[&str]) -> String {
    let mut s = String::from(": .manifests head, get\n:   .login\n:   .authn\n");
    for line in inject {
        s += &format!(":   {line}\n");
    }
    s += ":   .resolve\n\
          : .blobs head, get\n:   .login\n:   .authn\n:   .pull\n\
          : .tags get\n:   .login\n:   .authn\n:   .resolve\n";
    s
}

/// A mirror of `upstream` that injects `inject` (see [`inject_routes`]), with `settings`;
/// the store is `store` beside the pipeline unless `settings` names a `.cache`.
pub fn inject_pipeline(upstream: &str, inject: &[&str], settings: &[&str]) -> String {
    let mut settings: Vec<&str> = settings.to_vec();
    if !settings
        .iter()
        .any(|l| l.trim_start().starts_with(".cache"))
    {
        settings.insert(0, ".cache store");
    }
    pipeline(upstream, &[], &settings, &inject_routes(inject))
}

/// `.inject-layer DIR` with `.entrypoint /opt/acr/entry.sh` and `.env ACR_MOUNTS=s3://bucket`.
pub fn standard_inject(layer: &Path) -> Vec<String> {
    vec![
        format!(".inject-layer {}", layer.display()),
        "  .entrypoint /opt/acr/entry.sh".to_string(),
        "  .env ACR_MOUNTS=s3://bucket".to_string(),
    ]
}

/// `Vec<String>` as `Vec<&str>`.
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

// ------------------------------------------------------------------------------------------
// extra upstream images

/// Builds a one-layer linux/amd64 image (files as in [`build_image`]) with `entrypoint` and
/// `env` into a fresh layout under `root` and pushes it to `reg` as `repo_ref`.
pub fn push_image_with_entrypoint(
    reg: &Registry,
    root: &Path,
    repo_ref: &str,
    entrypoint: &[&str],
    env: &[&str],
) {
    let layout = root.join(format!("layout-{}", repo_ref.replace(['/', ':'], "_")));
    build_image(
        &layout,
        "t",
        "amd64",
        &[("hello.txt", b"an image with an entrypoint\n".to_vec())],
    );
    let image = format!("{}:t", layout.display());
    let mut args: Vec<String> = vec![
        "config".into(),
        "--image".into(),
        image,
        "--no-history".into(),
        "--created".into(),
        EPOCH.into(),
    ];
    for e in entrypoint {
        args.push("--config.entrypoint".into());
        args.push(e.to_string());
    }
    for e in env {
        args.push("--config.env".into());
        args.push(e.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("umoci", &args).ok();
    let img = OciImage {
        layout: layout.clone(),
        tag: "t".into(),
        digest: String::new(),
        media_type: OCI_MANIFEST.into(),
        size: 0,
    };
    push(reg, &img, repo_ref, &[]);
}

// ------------------------------------------------------------------------------------------
// OCI layouts and bundles

/// The digest and manifest (JSON) a tag of an OCI layout names.
pub fn layout_manifest(layout: &Path, tag: &str) -> (String, serde_json::Value) {
    let digest = layout_digest(layout, tag);
    (digest.clone(), layout_blob_json(layout, &digest))
}

/// A blob of an OCI layout.
pub fn layout_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256");
    let p = layout.join("blobs/sha256").join(hex);
    fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

pub fn layout_blob_json(layout: &Path, digest: &str) -> serde_json::Value {
    serde_json::from_slice(&layout_blob(layout, digest)).expect("blob json")
}

/// `umoci unpack --rootless --image LAYOUT:TAG BUNDLE`; returns the bundle's rootfs.
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    run(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:{tag}", layout.display()),
            &bundle.to_string_lossy(),
        ],
    )
    .ok();
    bundle.join("rootfs")
}

/// Asserts `root/rel` is a regular file with `content` and permission bits `mode`.
#[track_caller]
pub fn assert_file(root: &Path, rel: &str, content: &[u8], mode: u32) {
    let p = root.join(rel);
    let meta = fs::symlink_metadata(&p)
        .unwrap_or_else(|e| panic!("{} is missing from the unpacked image: {e}", p.display()));
    assert!(meta.is_file(), "{} is not a regular file", p.display());
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        mode,
        "mode of {} is {:o}",
        p.display(),
        meta.permissions().mode() & 0o7777
    );
    assert_eq!(
        fs::read(&p).expect("read"),
        content,
        "content of {}",
        p.display()
    );
}
