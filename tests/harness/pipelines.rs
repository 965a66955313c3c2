//! The runmd pipelines the tests run acr with (a pull-through mirror in front of an upstream,
//! its routes), the OCI error of a response body, and the digest of an image in a layout.

use std::path::Path;

use crate::harness::*;

/// The routes of a pull-through mirror; `login` is the input of every `.login` (a credential
/// file name, or empty).
pub fn routes(login: &str) -> String {
    let login = if login.is_empty() {
        ":   .login\n".to_string()
    } else {
        format!(":   .login {login}\n")
    };
    let auth = format!("{login}:   .authn\n");
    format!(
        ": .manifests head, get\n{auth}:   .resolve\n\
         : .blobs head, get\n{auth}:   .pull\n\
         : .tags get\n{auth}:   .resolve\n\
         : .referrers get\n{auth}:   .resolve\n"
    )
}

/// A pipeline: `.mirror MIRROR` with its modifier lines, `+ .proxy {ACR}` with `settings`
/// lines (`: .allow ...`) and `routes` (see [`routes`]). Without a `.cache` setting it has
/// `: .cache off`.
pub fn pipeline(
    mirror: &str,
    mirror_modifiers: &[&str],
    settings: &[&str],
    routes: &str,
) -> String {
    let mut s = String::from(
        "# acr test pipeline\n\nProse outside fences is not runmd: + .nothing : .here\n\n\
         ``` mirror\n+ .engine\n: .event start\n```\n\n``` start mirror\n+ .runtime\n",
    );
    s += &format!(": .mirror {mirror}\n");
    let mut has_host = false;
    for m in mirror_modifiers {
        has_host |= m.trim_start().starts_with(".host");
        s += &format!(": {m}\n");
    }
    if !has_host {
        s += &format!(": .host {ACR}, resolve, pull\n");
    }
    s += &format!("+ .proxy {ACR}\n");
    // These tests are about the chain in front of the upstream: no store unless one is asked
    // for (the store has its own tests in tests/store/).
    if !settings
        .iter()
        .any(|l| l.trim_start().starts_with(".cache"))
    {
        s += ": .cache off\n";
    }
    for line in settings {
        s += &format!(": {line}\n");
    }
    s += routes;
    s += "```\n";
    s
}

/// The plain pull-through pipeline in front of `upstream` (a URL).
pub fn pull_through(upstream: &str) -> String {
    pipeline(upstream, &[], &[], &routes(""))
}

/// The OCI error code in a response body (`errors[0].code`).
pub fn oci_code(body: &str) -> String {
    oci_error_field(body, "code")
}

/// The OCI error message in a response body (`errors[0].message`).
pub fn oci_message(body: &str) -> String {
    oci_error_field(body, "message")
}

/// The user (and password) of [`forward_auth_upstream`], whose credentials the clients send
/// through `.forward-auth`.
pub const FW_USER: &str = "fwd-user";
pub const FW_PASS: &str = "fwd-pa55";

/// An upstream behind htpasswd with [`FW_USER`], holding `library/test:1`.
pub fn forward_auth_upstream() -> Registry {
    let reg = Registry::start(RegistryAuth::htpasswd(FW_USER, FW_PASS));
    push(&reg, &fixtures().test, "library/test:1", &[]);
    reg
}

/// Asserts that `r` is acr's 502 `UNAVAILABLE` (the upstream failed it) and that the OCI
/// error message holds `says`.
#[track_caller]
pub fn assert_upstream_unavailable(r: &HttpResponse, says: &str) {
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(oci_code(&r.text()), "UNAVAILABLE", "{}", r.text());
    assert!(
        oci_message(&r.text()).contains(says),
        "no {says:?} in {}",
        r.text()
    );
}

/// `errors[0].FIELD` of an OCI error body (after anything before its `{`).
fn oci_error_field(body: &str, field: &str) -> String {
    let json_start = body.find('{').unwrap_or(0);
    serde_json::from_str::<serde_json::Value>(&body[json_start..])
        .ok()
        .and_then(|j| j["errors"][0][field].as_str().map(String::from))
        .unwrap_or_else(|| panic!("not an OCI error body: {body}"))
}

/// The manifest digest recorded for `tag` in an OCI layout's index.json.
pub fn layout_digest(layout: &Path, tag: &str) -> String {
    let p = layout.join("index.json");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&p).expect("index.json")).expect("index json");
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|d| d["digest"].as_str())
        .unwrap_or_else(|| panic!("no {tag} in {}", p.display()))
        .to_string()
}
