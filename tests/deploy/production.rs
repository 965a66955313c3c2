//! End-to-end tests of what running acr in production needs, with real clients and a real
//! CNCF distribution upstream:
//! * client authentication (`: .users` htpasswd, `: .allow-pull` rules, acr's own `/token`
//!   for skopeo, podman and containerd, `: .token-secret` shared by replicas) while the
//!   upstream only ever sees acr's own credentials; `.forward-auth`, where the client's
//!   credentials are the upstream's;
//! * https (`: .tls-cert`, `: .tls-key`) verified by skopeo and curl, a renewed certificate
//!   served without a restart, client certificates (`: .tls-client-ca`);
//! * `/metrics` (request counters, latency histograms, cache hits), `/healthz`, `/readyz`,
//!   and the `/status` page rendered by headless Chromium;
//! * SIGTERM: transfers in progress finish within `--shutdown-grace`, new connections are
//!   refused, and a transfer cut by the end of the grace ends in an error for its client.
//!
//! Every test starts its own upstream and its own acr, so they run in parallel.

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::production::*;
use crate::harness::*;
use sha2::{Digest as _, Sha256};

mod client_auth;
mod observability;
mod shutdown;
mod tls;

/// acr's own credentials for the upstream; no client ever gets them.
const UP_USER: &str = "upstream-robot";
const UP_PASS: &str = "Upstream-0nly-pa55";
/// Users of acr (not users of the upstream).
const ALICE: (&str, &str) = ("alice", "al1ce-secret");
const BOB: (&str, &str) = ("bob", "b0b-secret");

fn lower(out: &CmdOutput) -> String {
    format!("{}\n{}", out.stdout, out.stderr).to_ascii_lowercase()
}

/// Asserts that a client command failed (`what` says what it must not have done) and that
/// its output says so with one of `words` (lower case).
#[track_caller]
fn assert_failed_saying_one_of(out: &CmdOutput, what: &str, words: &[&str]) {
    assert!(!out.success(), "{what}: {out:?}");
    let text = lower(out);
    assert!(words.iter().any(|w| text.contains(w)), "{out:?}");
}

/// An upstream behind htpasswd with a user no client knows, holding `library/test:1` and
/// `public/test:1`.
fn auth_upstream() -> Registry {
    let reg = Registry::start(RegistryAuth::htpasswd(UP_USER, UP_PASS));
    push(&reg, &fixtures().test, "library/test:1", &[]);
    push(&reg, &fixtures().test, "public/test:1", &[]);
    reg
}

/// acr in front of `reg` with client auth (`AUTH_SETTINGS` and `extra` settings), and its
/// own upstream credentials in `ACR_AUTH_127_0_0_1_PORT`.
fn auth_mirror(reg: &Registry, extra: &[&str], files: &[(&str, &str)]) -> Acr {
    let mut settings: Vec<&str> = AUTH_SETTINGS.to_vec();
    settings.extend_from_slice(extra);
    let mut opts = AcrOptions {
        env: vec![(acr_auth_var(reg), format!("{UP_USER}:{UP_PASS}"))],
        files: vec![("users.htpasswd".into(), htpasswd_file(&[ALICE, BOB]))],
        ..AcrOptions::default()
    };
    for (name, content) in files {
        opts.files.push((name.to_string(), content.to_string()));
    }
    Acr::launch(&pipeline(&reg.url(), &[], &settings, &routes("")), opts)
}

/// The upstream saw none of the clients' credentials: its log names none of acr's users,
/// and every request it authenticated was acr's own user.
fn assert_upstream_saw_only_acrs_credentials(reg: &Registry) {
    let log = reg.log();
    for secret in [ALICE.0, ALICE.1, BOB.0, BOB.1] {
        assert!(
            !log.contains(secret),
            "the upstream's log mentions {secret:?}: a client's credential reached it\n{log}"
        );
    }
    let users: Vec<&str> = log
        .split("auth.user.name=")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|u| u.trim_matches('"'))
        .collect();
    assert!(
        !users.is_empty() && users.iter().all(|u| *u == UP_USER),
        "the upstream authenticated {users:?}, not only {UP_USER}\n{log}"
    );
}

fn plain_upstream() -> Registry {
    let reg = Registry::start(RegistryAuth::None);
    push(&reg, &fixtures().test, "library/test:1", &[]);
    reg
}

/// The client-auth settings: alice and bob in `users.htpasswd`; alice may pull `library/*`,
/// anyone `public/*`.
const AUTH_SETTINGS: [&str; 3] = [
    ".users users.htpasswd",
    ".allow-pull alice library/*",
    ".allow-pull * public/*",
];

/// `skopeo login` then `inspect --raw` and `copy` work for alice on a repository her rule
/// allows; bob, a valid user outside the rule, gets 403 `denied` there but may pull
/// `public/*` (the `*` rule); a wrong password fails `skopeo login`; without a login every
/// pull is 401. The upstream needs credentials the clients do not have: pulls work only
/// because acr uses its own, and the upstream never sees the clients'.
#[test]
fn skopeo_logs_in_to_acr_and_the_pull_rules_decide_what_each_user_gets() {
    let reg = auth_upstream();
    let acr = auth_mirror(&reg, &[], &[]);
    let scratch = temp_dir("acr-logins-");
    let auth = |name: &str| scratch.path().join(format!("{name}.json"));
    let test = format!("docker://{}/library/test:1", acr.host());
    let public = format!("docker://{}/public/test:1", acr.host());

    // No login: 401, and acr asked for credentials.
    let anon = skopeo_as(&auth("anon"), true, &["inspect", "--raw", &test]);
    assert_failed_saying_one_of(
        &anon,
        "pulled without credentials",
        &["unauthorized", "401"],
    );

    // alice: login, inspect, copy.
    skopeo_as(
        &auth("alice"),
        true,
        &["login", "-u", ALICE.0, "-p", ALICE.1, &acr.host()],
    )
    .ok();
    let saved = std::fs::read_to_string(auth("alice")).expect("auth file");
    assert!(saved.contains(&acr.host()), "skopeo login saved {saved}");
    let raw = skopeo_as(&auth("alice"), true, &["inspect", "--raw", &test])
        .ok()
        .stdout;
    assert_eq!(digest_of(raw.as_bytes()), fixtures().test.digest);
    let out = scratch.path().join("alice-dir");
    let dest = format!("dir:{}", out.display());
    skopeo_as(&auth("alice"), true, &["copy", &test, &dest]).ok();
    let manifest = std::fs::read(out.join("manifest.json")).expect("manifest.json");
    assert_eq!(digest_of(&manifest), fixtures().test.digest);
    for (digest, size) in fixtures().test.layers() {
        let blob = std::fs::read(out.join(digest.trim_start_matches("sha256:"))).expect("layer");
        assert_eq!(blob.len() as u64, size);
        assert_eq!(digest_of(&blob), digest);
    }

    // bob: a user of the file, but library/* is alice's.
    skopeo_as(
        &auth("bob"),
        true,
        &["login", "-u", BOB.0, "-p", BOB.1, &acr.host()],
    )
    .ok();
    let denied = skopeo_as(&auth("bob"), true, &["inspect", "--raw", &test]);
    assert_failed_saying_one_of(&denied, "bob pulled library/test", &["denied", "403"]);
    let raw = skopeo_as(&auth("bob"), true, &["inspect", "--raw", &public])
        .ok()
        .stdout;
    assert_eq!(digest_of(raw.as_bytes()), fixtures().test.digest);

    // A wrong password: the login fails.
    let wrong = skopeo_as(
        &auth("wrong"),
        true,
        &[
            "login",
            "-u",
            ALICE.0,
            "-p",
            "not-her-password",
            &acr.host(),
        ],
    );
    assert_failed_saying_one_of(
        &wrong,
        "logged in with a wrong password",
        &["invalid username/password", "unauthorized", "401"],
    );

    // acr answered 403 to bob and 401 without credentials; the upstream saw only acr's user.
    let log = acr.log();
    assert!(log.contains("status=403"), "no 403 in acr's log:\n{log}");
    assert!(log.contains("status=401"), "no 401 in acr's log:\n{log}");
    assert_upstream_saw_only_acrs_credentials(&reg);
}
