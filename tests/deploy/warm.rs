//! `acr warm`: images pre-pulled into the proxy's store through its own routes, against real
//! CNCF distribution upstreams (open and token-auth), then pulled by skopeo through
//! `acr mirror start` with the upstream stopped; a platform filter; the errors (an image that
//! does not exist, a pipeline without a store, a broken pipeline file, wrong credentials).
//!
//! Every test starts its own upstream and uses its own directories, so they run in parallel.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::*;
use tempfile::TempDir;

/// The pull-through pipeline in front of `upstream` with its store at `store`.
fn warm_pipeline(upstream: &str, store: &Path) -> String {
    pipeline(
        upstream,
        &[],
        &[&format!(".cache {}", store.display())],
        &routes(""),
    )
}

/// A working directory with the pipeline (its `{ACR}` on a free port) written in it.
struct Work {
    dir: TempDir,
    runmd: PathBuf,
    text: String,
}

fn work(runmd: &str) -> Work {
    let dir = temp_dir("acr-warm-");
    let text = runmd.replace(ACR, &format!("127.0.0.1:{}", free_port()));
    let path = dir.path().join("mirror.runmd");
    std::fs::write(&path, &text).expect("write runmd");
    Work {
        dir,
        runmd: path,
        text,
    }
}

/// A new store directory and a work directory whose pipeline mirrors `reg` into it.
fn warm_work(reg: &Registry) -> (TempDir, Work) {
    let store = temp_dir("acr-warm-store-");
    let w = work(&warm_pipeline(&reg.url(), store.path()));
    (store, w)
}

/// A seeded upstream and [`warm_work`] over it: the upstream, what it holds, the store and
/// the work directory.
fn warm_work_on_a_seeded_upstream() -> (Registry, Seeded, TempDir, Work) {
    let reg = Registry::start(RegistryAuth::None);
    let seeded = seed(&reg);
    let (store, w) = warm_work(&reg);
    (reg, seeded, store, w)
}

/// `acr --runmd-path RUNMD warm ARGS` in the work directory, with no credential of the
/// machine (only `env`).
fn acr_warm(w: &Work, args: &[&str], env: &[(String, String)]) -> CmdOutput {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_acr"));
    cmd.arg("--runmd-path")
        .arg(&w.runmd)
        .arg("warm")
        .args(args)
        .current_dir(w.dir.path());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("ACR_")
            || k.starts_with("DOCKER_")
            || k.starts_with("REGISTRY_")
            || k == "XDG_RUNTIME_DIR"
        {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", w.dir.path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_cmd(cmd, Duration::from_secs(180))
}

/// The JSON `acr warm --json` printed.
#[track_caller]
fn json_of(out: &CmdOutput) -> serde_json::Value {
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("`acr warm --json` printed no JSON ({e}): {out:?}"))
}

/// The report of `image` in `acr warm --json` output.
#[track_caller]
fn report<'a>(json: &'a serde_json::Value, image: &str) -> &'a serde_json::Value {
    json["images"]
        .as_array()
        .expect("images")
        .iter()
        .find(|r| r["image"] == image)
        .unwrap_or_else(|| panic!("no report of {image} in {json}"))
}

/// Where the store keeps a blob.
fn stored_blob(store: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    store.join("blobs/sha256").join(&hex[..2]).join(hex)
}

/// The config and layer digests of a single-platform fixture image.
fn blobs_of(image: &OciImage) -> Vec<String> {
    let m = image.manifest();
    let mut out = vec![m["config"]["digest"].as_str().expect("config").to_string()];
    out.extend(image.layers().into_iter().map(|(d, _)| d));
    out
}

#[track_caller]
fn assert_stored(store: &Path, digests: &[String]) {
    for d in digests {
        let p = stored_blob(store, d);
        let bytes = std::fs::read(&p)
            .unwrap_or_else(|e| panic!("{d} is not in the store ({}): {e}", p.display()));
        assert_eq!(digest_of(&bytes), *d, "{} holds other bytes", p.display());
    }
}

/// A counter of acr's `/metrics`.
fn metric(acr: &Acr, name: &str) -> u64 {
    let text = acr.fetch("GET", "/metrics", &[]).text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}")) as u64
}

/// Warms `test:1` and every platform of `multi:1`; the store then holds every blob, and with
/// the upstream stopped `acr mirror start` serves both images to skopeo from the store alone.
#[test]
fn warmed_images_pull_through_the_mirror_with_the_upstream_down() {
    let (reg, seeded, store, w) = warm_work_on_a_seeded_upstream();
    let f = fixtures();
    // The same pipeline, for the mirror started below.
    let text = warm_pipeline(&reg.url(), store.path());

    let out = acr_warm(&w, &["--json", "library/test:1", "library/multi:1"], &[]).ok();
    let json = json_of(&out);
    let test = report(&json, "library/test:1");
    assert_eq!(test["ok"], true, "{json}");
    assert_eq!(test["digest"], seeded.test_oci.as_str(), "{json}");
    assert_eq!(test["layers"], 1, "{json}");
    assert_eq!(
        test["platforms"],
        serde_json::json!(["linux/amd64"]),
        "{json}"
    );
    assert!(test.get("error").is_none(), "{json}");
    let multi = report(&json, "library/multi:1");
    assert_eq!(multi["ok"], true, "{json}");
    assert_eq!(multi["digest"], seeded.multi_oci.as_str(), "{json}");
    assert_eq!(multi["layers"], 2, "{json}");
    let mut platforms: Vec<&str> = multi["platforms"]
        .as_array()
        .expect("platforms")
        .iter()
        .map(|p| p.as_str().expect("platform"))
        .collect();
    platforms.sort();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{json}");
    let blob_bytes =
        |img: &OciImage| -> u64 { blobs_of(img).iter().map(|d| img.blob(d).len() as u64).sum() };
    assert_eq!(test["bytes"].as_u64(), Some(blob_bytes(&f.test)), "{json}");
    assert_eq!(
        multi["bytes"].as_u64(),
        Some(blob_bytes(&f.multi_amd64) + blob_bytes(&f.multi_arm64)),
        "{json}"
    );
    assert_eq!(
        json["bytes"].as_u64(),
        Some(test["bytes"].as_u64().unwrap() + multi["bytes"].as_u64().unwrap())
    );
    assert!(json["seconds"].as_f64().is_some(), "{json}");
    // --json: nothing but the JSON on stdout.
    assert_eq!(out.stdout.trim().lines().count(), 1, "{out:?}");

    let mut every_blob = blobs_of(&f.test);
    every_blob.extend(blobs_of(&f.multi_amd64));
    every_blob.extend(blobs_of(&f.multi_arm64));
    assert_stored(store.path(), &every_blob);
    for manifest in [&seeded.test_oci, &seeded.multi_oci]
        .into_iter()
        .chain(seeded.multi_oci_children.iter().map(|(_, d)| d))
    {
        let hex = manifest.strip_prefix("sha256:").unwrap();
        assert!(
            store.path().join("manifests/sha256").join(hex).is_file(),
            "manifest {manifest} is not in the store"
        );
    }

    // Again, without --json and not on a terminal: plain lines, every blob a hit.
    let again = acr_warm(
        &w,
        &[&format!("{}/library/test:1", reg.host()), "library/multi:1"],
        &[],
    )
    .ok();
    assert!(
        again.stdout.contains("warmed 2 of 2 images: 3 layers"),
        "{again:?}"
    );
    assert!(again.stdout.contains(&seeded.test_oci), "{again:?}");
    assert_eq!(
        again.stderr.matches(" cached").count(),
        every_blob.len(),
        "every blob was a hit the second time: {again:?}"
    );
    assert!(
        !again.stderr.contains('\r'),
        "no bars when stderr is not a terminal"
    );

    // The upstream goes away; a mirror over the same pipeline (and store) serves both images.
    let upstream = reg.url();
    drop(reg);
    assert!(try_http_request("GET", &format!("{upstream}/v2/"), &[], None).is_err());
    let acr = Acr::start(&text);
    let pulled = temp_dir("acr-warm-pulled-");
    let test_layout = pulled.path().join("test");
    let copy = skopeo(&[
        "copy",
        &format!("docker://{}/library/test:1", acr.host()),
        &format!("oci:{}:1", test_layout.display()),
    ]);
    assert!(copy.success(), "{copy:?}\n{}", acr.log());
    assert_eq!(layout_digest(&test_layout, "1"), seeded.test_oci);
    let multi_layout = pulled.path().join("multi");
    let copy = skopeo(&[
        "copy",
        "--all",
        &format!("docker://{}/library/multi:1", acr.host()),
        &format!("oci:{}:1", multi_layout.display()),
    ]);
    assert!(copy.success(), "{copy:?}\n{}", acr.log());
    assert_eq!(layout_digest(&multi_layout, "1"), seeded.multi_oci);
    for d in &every_blob {
        let hex = d.strip_prefix("sha256:").unwrap();
        let in_layout = [&test_layout, &multi_layout]
            .iter()
            .any(|l| l.join("blobs/sha256").join(hex).is_file());
        assert!(in_layout, "skopeo did not get {d}");
    }
    assert_eq!(metric(&acr, "acr_cache_misses_total"), 0, "{}", acr.log());
    assert_eq!(metric(&acr, "acr_bytes_from_upstream_total"), 0);
    assert!(metric(&acr, "acr_cache_hits_total") >= every_blob.len() as u64);
}

/// `--platform linux/arm64` warms the arm64 child of the index only: its config and layer
/// are stored, the amd64 ones are not. By digest, with the registry named, works the same.
#[test]
fn a_platform_filter_warms_only_that_child() {
    let (reg, seeded, store, w) = warm_work_on_a_seeded_upstream();
    let f = fixtures();

    let out = acr_warm(
        &w,
        &["--json", "--platform", "linux/arm64", "library/multi:1"],
        &[],
    )
    .ok();
    let json = json_of(&out);
    let multi = report(&json, "library/multi:1");
    assert_eq!(multi["ok"], true, "{json}");
    assert_eq!(multi["digest"], seeded.multi_oci.as_str());
    assert_eq!(multi["layers"], 1, "{json}");
    assert_eq!(multi["platforms"], serde_json::json!(["linux/arm64"]));
    assert_stored(store.path(), &blobs_of(&f.multi_arm64));
    let arm64 = blobs_of(&f.multi_arm64);
    for d in blobs_of(&f.multi_amd64) {
        if !arm64.contains(&d) {
            assert!(
                !stored_blob(store.path(), &d).exists(),
                "{d} of the amd64 image was stored"
            );
        }
    }
    let (_, amd64_manifest) = seeded
        .multi_oci_children
        .iter()
        .find(|(arch, _)| arch == "amd64")
        .expect("amd64 child");
    assert!(!store
        .path()
        .join("manifests/sha256")
        .join(amd64_manifest.strip_prefix("sha256:").unwrap())
        .exists());

    // By digest, registry named (sent as ?ns=), the Docker manifest list.
    let by_digest = format!("{}/library/multi@{}", reg.host(), seeded.multi_v2s2);
    let out = acr_warm(
        &w,
        &["--json", "--platform", "linux/amd64", &by_digest],
        &[],
    )
    .ok();
    let json = json_of(&out);
    let list = report(&json, &by_digest);
    assert_eq!(list["ok"], true, "{json}");
    assert_eq!(list["digest"], seeded.multi_v2s2.as_str());
    assert_eq!(list["platforms"], serde_json::json!(["linux/amd64"]));
    assert_eq!(list["layers"], 1);

    // A platform the index lacks: that image fails, saying what it has.
    let out = acr_warm(&w, &["--platform", "linux/s390x", "library/multi:1"], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("no platform linux/s390x"), "{out:?}");
    assert!(out.stderr.contains("linux/arm64"), "{out:?}");
}

/// A token-auth upstream: the routes' `.login` finds the credentials in the environment
/// (`ACR_AUTH_127_0_0_1_PORT`) and `.authn` gets the token; without them the warm fails with
/// exit 1 and says why.
#[test]
fn a_token_auth_upstream_warms_with_credentials_from_the_environment() {
    let reg = Registry::start(RegistryAuth::token("warmer", "s3cret-pass", false));
    let seeded = seed(&reg);
    let f = fixtures();
    let (store, w) = warm_work(&reg);
    let var = format!("ACR_AUTH_127_0_0_1_{}", reg.addr().port());

    let out = acr_warm(&w, &["--json", "library/test:1"], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let json = json_of(&out);
    let test = report(&json, "library/test:1");
    assert_eq!(test["ok"], false, "{json}");
    assert!(
        test["error"].as_str().unwrap_or("").contains("401"),
        "{json}"
    );
    assert!(out.stderr.contains("library/test:1"), "{out:?}");

    let out = acr_warm(
        &w,
        &["--json", "library/test:1", "library/multi:1"],
        &[(var, "warmer:s3cret-pass".into())],
    )
    .ok();
    let json = json_of(&out);
    assert_eq!(report(&json, "library/test:1")["ok"], true, "{json}");
    assert_eq!(
        report(&json, "library/test:1")["digest"],
        seeded.test_oci.as_str()
    );
    assert_eq!(report(&json, "library/multi:1")["layers"], 2, "{json}");
    let mut every_blob = blobs_of(&f.test);
    every_blob.extend(blobs_of(&f.multi_amd64));
    every_blob.extend(blobs_of(&f.multi_arm64));
    assert_stored(store.path(), &every_blob);
    assert!(
        !out.stdout.contains("s3cret-pass") && !out.stderr.contains("s3cret-pass"),
        "the password leaked: {out:?}"
    );
}

/// An image that does not exist fails (exit 1, named, the others still warmed); a pipeline
/// with `: .cache off` has no store to warm; a broken pipeline is exit 2; a malformed image
/// name is refused before anything is fetched.
#[test]
fn errors_say_which_image_and_why() {
    let (reg, seeded, store, w) = warm_work_on_a_seeded_upstream();
    let f = fixtures();

    let out = acr_warm(&w, &["--json", "library/absent:1", "library/test:1"], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let json = json_of(&out);
    let absent = report(&json, "library/absent:1");
    assert_eq!(absent["ok"], false, "{json}");
    assert!(absent["digest"].is_null(), "{json}");
    assert!(absent["error"].as_str().unwrap().contains("404"), "{json}");
    assert_eq!(report(&json, "library/test:1")["ok"], true, "{json}");
    assert_eq!(
        report(&json, "library/test:1")["digest"],
        seeded.test_oci.as_str()
    );
    assert_stored(store.path(), &blobs_of(&f.test));
    assert!(
        out.stderr.contains("1 of 2 images not warmed") && out.stderr.contains("library/absent:1"),
        "{out:?}"
    );

    // Without --json: the summary line says FAILED, the total counts what warmed.
    let out = acr_warm(&w, &["library/absent:1"], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stdout.contains("library/absent:1: FAILED: 404"),
        "{out:?}"
    );
    assert!(out.stdout.contains("warmed 0 of 1 image"), "{out:?}");

    // No store.
    let off = work(&pipeline(&reg.url(), &[], &[], &routes("")));
    assert!(off.text.contains(": .cache off"));
    let out = acr_warm(&off, &["library/test:1"], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains(".cache off") && out.stderr.contains("no store"),
        "{out:?}"
    );

    // A pipeline with errors: its diagnostics, exit 2.
    let broken = work(&warm_pipeline(&reg.url(), store.path()).replace(".resolve", ".resolv"));
    let out = acr_warm(&broken, &["library/test:1"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("unknown plugin '.resolv'"), "{out:?}");

    // A malformed image or platform: refused up front.
    for args in [
        &["Library/Test:1"][..],
        &["library/test:bad tag"],
        &["--platform", "linux", "library/test:1"],
    ] {
        let out = acr_warm(&w, args, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(out.stderr.contains("is not"), "{args:?}: {out:?}");
    }
    // No image at all: a usage error.
    let out = acr_warm(&w, &[], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// `acr warm --platform linux/x86_64` and a pipeline's `.platform linux/x86_64` read the
/// platform with the same parser and normalization: warm takes the amd64 child of the index
/// (as `--platform linux/amd64` does), and `.inject-layer DIR : .platform linux/x86_64`
/// rewrites the amd64 entry of the same index and leaves the arm64 one as the upstream has it.
#[test]
fn a_platform_spelled_x86_64_chooses_the_same_images_in_warm_and_in_a_pipeline() {
    let reg = Registry::start(RegistryAuth::None);
    let seeded = seed(&reg);
    let f = fixtures();

    // warm: x86_64 is amd64, and nothing of arm64 is stored.
    let (store, w) = warm_work(&reg);
    let mut warmed = Vec::new();
    for platform in ["linux/x86_64", "linux/amd64"] {
        let out = acr_warm(
            &w,
            &["--json", "--platform", platform, "library/multi:1"],
            &[],
        )
        .ok();
        let json = json_of(&out);
        let multi = report(&json, "library/multi:1");
        assert_eq!(multi["ok"], true, "{platform}: {json}");
        warmed.push((multi["platforms"].clone(), multi["layers"].clone()));
    }
    assert_eq!(
        warmed[0], warmed[1],
        "x86_64 and amd64 warmed different images"
    );
    assert_eq!(warmed[0].0, serde_json::json!(["linux/amd64"]));
    assert_stored(store.path(), &blobs_of(&f.multi_amd64));
    let amd64 = blobs_of(&f.multi_amd64);
    let arm64_only: Vec<String> = blobs_of(&f.multi_arm64)
        .into_iter()
        .filter(|d| !amd64.contains(d))
        .collect();
    let stored: Vec<&String> = arm64_only
        .iter()
        .filter(|d| stored_blob(store.path(), d).exists())
        .collect();
    assert!(
        stored.is_empty(),
        "blobs of the arm64 image stored: {stored:?}"
    );

    // the pipeline: the same spelling picks the same index entry.
    let layer = temp_dir("acr-warm-layer-");
    let dir = layer.path().join("tool");
    std::fs::create_dir_all(dir.join("opt/acr")).expect("mkdir");
    std::fs::write(dir.join("opt/acr/tool.txt"), b"amd64 only\n").expect("write");
    let inject_store = temp_dir("acr-warm-inject-store-");
    let routes = format!(
        ": .manifests head, get\n:   .login\n:   .authn\n\
         :   .inject-layer {}\n:     .platform linux/x86_64\n:   .resolve\n\
         : .blobs head, get\n:   .login\n:   .authn\n:   .pull\n",
        dir.display()
    );
    let acr = Acr::start(&pipeline(
        &reg.url(),
        &[],
        &[&format!(".cache {}", inject_store.path().display())],
        &routes,
    ));
    let upstream: serde_json::Value =
        serde_json::from_slice(&reg.fetch_manifest("GET", "library/multi", "1").body)
            .expect("upstream index");
    let r = http_request(
        "GET",
        &format!("{}/v2/library/multi/manifests/1", acr.url()),
        &[("Accept", ACCEPT_MANIFESTS)],
        None,
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), acr.log());
    let index: serde_json::Value = serde_json::from_slice(&r.body).expect("index");
    let mut rewritten = Vec::new();
    for (e, up) in index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .zip(upstream["manifests"].as_array().expect("manifests"))
    {
        if e["digest"] != up["digest"] {
            let p = &e["platform"];
            rewritten.push(format!(
                "{}/{}",
                p["os"].as_str().unwrap_or("?"),
                p["architecture"].as_str().unwrap_or("?")
            ));
        }
    }
    assert_eq!(
        serde_json::json!(rewritten),
        warmed[0].0,
        "the pipeline chose other images than warm; index: {index}"
    );
    assert_ne!(seeded.multi_oci, digest_of(&r.body));
}
