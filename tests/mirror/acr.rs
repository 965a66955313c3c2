//! Azure Container Registry support end to end, against stand-ins that speak the real wire
//! protocols (`tests/support/acr_standin.py`: Azure AD, managed identity, ACR's
//! `/oauth2/exchange` and `/oauth2/token`, in front of a CNCF distribution; the stand-in `az`
//! in `tests/support/az`):
//!
//! * `acr --registry example --registry-host http://127.0.0.1:P init`, then `mirror start`
//!   unchanged: log in with `az` (or, without az, from AZURE_* / workload identity /
//!   MSI_ENDPOINT), keep the refresh token in `access_token` (0600), renew it before it
//!   expires, serve skopeo and containerd (through the hosts.toml acr wrote);
//! * `.discover` + `.teleport overlaybd`: a tag asked for with `x-ms-upgrade-if-streamable:
//!   overlaybd` is answered with its streamable twin found through the referrers (API or
//!   the `sha256-<hex>` fallback tag), never a digest, never without the header;
//! * the referrers API through acr, and the overlaybd snapshotter's `/auth` request;
//! * ECR and GAR/GCR hosts through their docker credential helpers.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::acr_standin::*;
use crate::harness::*;

mod credential_helpers;
mod default_pipeline;
mod login;
mod teleport;

// ------------------------------------------------------------------------------------------
// helpers

/// `skopeo copy --preserve-digests docker://<acr>/<repo_ref> oci:<tmp>:t`; the digest copied.
fn skopeo_pull(acr_host: &str, repo_ref: &str) -> String {
    let out = temp_dir("acr-azure-out-");
    let dest = format!("oci:{}:t", out.path().display());
    let src = format!("docker://{acr_host}/{repo_ref}");
    skopeo(&["copy", "--preserve-digests", &src, &dest]).ok();
    layout_digest(out.path(), "t")
}

/// `ctr images pull --hosts-dir` of `<registry>/library/test:1` with the hosts.toml acr wrote
/// in `m`'s workspace; the image name and the (image, digest) pairs containerd then lists.
fn ctr_pull_test_1(m: &AcrMirror, reg: &AcrRegistry) -> (String, Vec<(String, String)>) {
    let ctrd = Containerd::start();
    let image = format!("{}/library/test:1", reg.host());
    ctrd.ctr_pull_with(&image, Some(&m.ws.hosts_dir()), &[])
        .ok();
    let got = ctrd.image_digests();
    (image, got)
}

/// The stand-in with short-lived tokens: refresh tokens of 6 s, access tokens of 2 s whose
/// lifetime it sends (`expires_in`).
fn short_lived_registry() -> AcrRegistry {
    AcrRegistry::start(&AcrStandinOptions {
        refresh_ttl: 6,
        access_ttl: 2,
        send_expires_in: true,
        ..AcrStandinOptions::default()
    })
}

/// The stand-in with refresh tokens that live `secs` seconds.
fn registry_with_refresh_ttl(secs: u64) -> AcrRegistry {
    AcrRegistry::start(&AcrStandinOptions {
        refresh_ttl: secs,
        ..AcrStandinOptions::default()
    })
}

/// The environment of a service principal with a client secret, logging in at `authority`.
fn client_secret_env(authority: String) -> Vec<(String, String)> {
    vec![
        ("AZURE_TENANT_ID".into(), TENANT.into()),
        ("AZURE_CLIENT_ID".into(), CLIENT_ID.into()),
        ("AZURE_CLIENT_SECRET".into(), CLIENT_SECRET.into()),
        ("AZURE_AUTHORITY_HOST".into(), authority),
    ]
}

/// The environment of AKS workload identity: the projected token in `token_file`, logging in
/// at `authority`.
fn workload_identity_env(token_file: String, authority: String) -> Vec<(String, String)> {
    vec![
        ("AZURE_TENANT_ID".into(), TENANT.into()),
        ("AZURE_CLIENT_ID".into(), WI_CLIENT_ID.into()),
        ("AZURE_FEDERATED_TOKEN_FILE".into(), token_file),
        ("AZURE_AUTHORITY_HOST".into(), authority),
    ]
}

/// acr on the default pipeline with no `az` on its PATH and `env` in its environment.
fn mirror_without_az(reg: &AcrRegistry, env: Vec<(String, String)>) -> AcrMirror {
    AcrMirror::start(
        reg,
        AcrMirrorOptions {
            az: Az::Absent,
            env,
        },
    )
}

/// `init`, then `mirror start` with `az` and `env`, which must fail without a panic: the
/// workspace, the output and its stdout and stderr as one text.
fn mirror_start_fails(
    reg: &AcrRegistry,
    az: Az,
    env: Vec<(String, String)>,
) -> (AcrWorkspace, CmdOutput, String) {
    let ws = AcrWorkspace::new(reg, AcrMirrorOptions { az, env });
    ws.init(&format!("127.0.0.1:{}", free_port())).ok();
    let out = ws.start_to_completion(Duration::from_secs(120));
    assert!(!out.success(), "mirror start succeeded: {out:?}");
    let text = all_output(&out);
    assert!(!text.contains("panicked"), "{out:?}");
    (ws, out, text)
}

/// The stand-in's answer to an access token for pulling `library/test`, asked with `token`
/// as the refresh token.
fn pull_token_with_refresh(reg: &AcrRegistry, token: &str) -> HttpResponse {
    reg.standin
        .try_access_token_with_refresh(token, "repository:library/test:pull")
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[track_caller]
fn assert_token_file_is_private(ws: &AcrWorkspace) {
    let path = ws.access_token_path();
    let meta = std::fs::metadata(&path).unwrap_or_else(|e| {
        panic!(
            "no access_token at {}: {e}\nworld dir: {:?}",
            path.display(),
            std::fs::read_dir(ws.world_dir())
                .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
                .unwrap_or_default()
        )
    });
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "{} must be 0600",
        path.display()
    );
}

/// The whole output of a command, for messages.
fn all_output(out: &CmdOutput) -> String {
    format!("{}\n{}", out.stdout, out.stderr)
}

/// True when `word` occurs in `text` delimited by non-alphanumeric characters.
fn has_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .any(|w| w == word)
}

const ECR_SECRET: &str = "ecr-standin-Zm9vYmFyYmF6";

const GAR_SECRET: &str = "ya29.gar-standin-token";

/// acr with `.endpoint HOST <upstream>` for each of `hosts` and path routing; `helpers`
/// (name, hosts, user, secret) on PATH; `config` as `$DOCKER_CONFIG/config.json` if given
/// (an empty DOCKER_CONFIG dir otherwise).
fn cloud_acr(
    hosts: &[&str],
    helpers: &[(&str, &[&str], &str, &str)],
    config: Option<serde_json::Value>,
) -> Cloud {
    let reg = cloud_upstream();
    let scratch = temp_dir("acr-cloud-");
    let bin = scratch.path().join("bin");
    let docker = scratch.path().join("docker");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::create_dir_all(&docker).expect("mkdir");
    for (name, helper_hosts, user, secret) in helpers {
        let calls = scratch.path().join(format!("{name}.calls"));
        write_helper(&bin, name, helper_hosts, user, secret, &calls);
    }
    if let Some(c) = config {
        std::fs::write(docker.join("config.json"), c.to_string()).expect("config.json");
    }
    let mut settings: Vec<String> = hosts
        .iter()
        .map(|h| format!(".endpoint {h} {}", reg.url()))
        .collect();
    settings.push(".path-routing".into());
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let acr = Acr::start_with(
        &pipeline(&reg.url(), &[], &settings, &routes("")),
        AcrOptions {
            env: vec![
                ("PATH".into(), path),
                ("DOCKER_CONFIG".into(), docker.display().to_string()),
                ("RUST_LOG".into(), "info,acr=debug,acr_plugins=debug".into()),
            ],
            ..AcrOptions::default()
        },
    );
    Cloud { reg, acr, scratch }
}

struct Cloud {
    reg: Registry,
    acr: Acr,
    scratch: tempfile::TempDir,
}

/// A token-auth upstream that takes `AWS` and `oauth2accesstoken` with the helpers' secrets
/// (and refuses anonymous pulls), with `library/test:1`.
fn cloud_upstream() -> Registry {
    let reg = Registry::start(RegistryAuth::Token {
        users: vec![
            ("AWS".into(), ECR_SECRET.into()),
            ("oauth2accesstoken".into(), GAR_SECRET.into()),
        ],
        anonymous_pull: false,
    });
    push(&reg, &fixtures().test, "library/test:1", &[]);
    reg
}

/// A `docker-credential-NAME` in `bin` speaking the real protocol: `get`, the server URL on
/// stdin (with or without scheme), JSON on stdout for the `hosts` it knows, "credentials not
/// found in native keychain" otherwise. Every server asked about is appended to `calls`.
fn write_helper(bin: &Path, name: &str, hosts: &[&str], user: &str, secret: &str, calls: &Path) {
    let script = format!(
        "#!/bin/sh\n\
         [ \"$1\" = get ] || {{ echo \"unsupported: $1\" >&2; exit 1; }}\n\
         read -r server || true\n\
         echo \"$server\" >> '{calls}'\n\
         host=${{server#*://}}\n\
         host=${{host%%/*}}\n\
         case \"$host\" in\n\
           {patterns})\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}\\n' \"$server\" ;;\n\
           *) echo 'credentials not found in native keychain'; exit 1 ;;\n\
         esac\n",
        calls = calls.display(),
        patterns = hosts.join("|"),
    );
    let p = bin.join(format!("docker-credential-{name}"));
    std::fs::write(&p, script).expect("write helper");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod helper");
}

impl Cloud {
    /// What the credential helper `helper` was asked.
    fn calls(&self, helper: &str) -> String {
        std::fs::read_to_string(self.scratch.path().join(format!("{helper}.calls")))
            .unwrap_or_default()
    }
}
