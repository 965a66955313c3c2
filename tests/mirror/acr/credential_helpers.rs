//! ECR and GAR through docker credential helpers.

use super::*;

// ------------------------------------------------------------------------------------------
// ECR and GAR through docker credential helpers

const ECR_HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const GAR_HOST: &str = "us-central1-docker.pkg.dev";
const GCR_HOST: &str = "gcr.io";
const REGIONAL_GCR_HOST: &str = "eu.gcr.io";

/// Pulls `HOST/library/test:1` through acr (path routing, skopeo) and by raw HTTP with `?ns=`.
fn pulls_cloud_host(c: &Cloud, host: &str, user: &str, secret: &str) {
    assert_eq!(
        skopeo_pull(&c.acr.host(), &format!("{host}/library/test:1")),
        fixtures().test.digest
    );
    let r = c
        .acr
        .fetch_manifest("GET", &format!("/v2/library/test/manifests/1?ns={host}"));
    assert_eq!(r.status, 200, "?ns={host}: {}\n{}", r.text(), c.acr.log());
    assert_eq!(digest_of(&r.body), fixtures().test.digest);
    let ts = c.reg.token_server().expect("token server");
    assert!(
        ts.token_requests().iter().any(|l| l.contains("status=200")
            && l.contains(&format!("user={user}"))
            && l.contains("scope=repository:library/test:pull")),
        "no token for {user}:\n{}",
        ts.log()
    );
    assert!(
        !c.acr.log().contains(secret),
        "a helper's secret reached acr's log"
    );
}

/// An ECR host without any config.json: acr asks `docker-credential-ecr-login`.
#[test]
fn an_ecr_host_gets_credentials_from_docker_credential_ecr_login() {
    let c = cloud_acr(
        &[ECR_HOST],
        &[("ecr-login", &[ECR_HOST], "AWS", ECR_SECRET)],
        None,
    );
    pulls_cloud_host(&c, ECR_HOST, "AWS", ECR_SECRET);
    assert_helper_asked(&c, "ecr-login", ECR_HOST);
}

/// GAR (`*-docker.pkg.dev`) and GCR (`gcr.io`, `*.gcr.io`) hosts without config.json: acr
/// asks `docker-credential-gcr`.
#[test]
fn gar_and_gcr_hosts_get_credentials_from_docker_credential_gcr() {
    let hosts = [GAR_HOST, GCR_HOST, REGIONAL_GCR_HOST];
    let c = cloud_acr(
        &hosts,
        &[("gcr", &hosts, "oauth2accesstoken", GAR_SECRET)],
        None,
    );
    for host in hosts {
        pulls_cloud_host(&c, host, "oauth2accesstoken", GAR_SECRET);
    }
    for host in hosts {
        assert_helper_asked(&c, "gcr", host);
    }
}

/// A helper named in config.json `credHelpers` serves a GAR-style host.
#[test]
fn a_cred_helper_from_config_json_serves_a_gar_host() {
    let host = "europe-west4-docker.pkg.dev";
    let c = cloud_acr(
        &[host],
        &[("gcloud", &[host], "oauth2accesstoken", GAR_SECRET)],
        Some(serde_json::json!({"credHelpers": {host: "gcloud"}})),
    );
    pulls_cloud_host(&c, host, "oauth2accesstoken", GAR_SECRET);
    let calls = c.calls("gcloud");
    assert!(
        calls.lines().any(|l| l.contains(host)),
        "docker-credential-gcloud was not asked for {host}: {calls:?}"
    );
}

/// Asserts that acr ran `docker-credential-HELPER` for `host`.
#[track_caller]
fn assert_helper_asked(c: &Cloud, helper: &str, host: &str) {
    let calls = c.calls(helper);
    assert!(
        calls.lines().any(|l| l.contains(host)),
        "docker-credential-{helper} was not asked for {host}: {calls:?}\n{}",
        c.acr.log()
    );
}
