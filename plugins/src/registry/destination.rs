//! Where an upstream may send acr: the rules for redirects (`Location`) and token realms
//! (`WWW-Authenticate: Bearer realm=...`), which come from upstream answers and so are not
//! trusted, and the redaction of URLs acr puts in messages.
//!
//! - The scheme never goes down: from https, only https.
//! - Link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254,
//!   `metadata.google.internal`, ...) are never a destination unless they are the upstream's
//!   own host (a pipeline that names such a host means it).
//! - A document (manifest, tag list, referrers) follows redirects only within the upstream's
//!   own origin (scheme, host, port); only a blob follows one to another host (its storage),
//!   and then without `Authorization`.
//! - A realm is https, or plain http on the upstream's own host when the upstream itself is
//!   plain http (a local registry and its token service).
//! - A host *name* that resolves only to link-local or metadata addresses is never connected
//!   to ([`GuardedResolver`], the upstream client's DNS): a redirect to a name an attacker
//!   points at 169.254.169.254 is refused like the address itself. A pipeline that means such
//!   a host names it by address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;

use super::RegistryError;

/// Host names of cloud metadata services (they resolve to link-local addresses).
const METADATA_HOSTS: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.internal",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Whether `ip` is link-local or a cloud metadata address.
fn is_metadata_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_metadata_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_metadata_v4(v4);
            }
            let aws_v6 = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
            // fe80::/10 is link-local.
            v6 == aws_v6 || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

fn is_metadata_v4(v4: Ipv4Addr) -> bool {
    // 169.254.0.0/16 (AWS, Azure, GCP, OpenStack, ...) and Alibaba's 100.100.100.200.
    v4.is_link_local() || v4 == Ipv4Addr::new(100, 100, 100, 200)
}

/// Whether `url` points at a link-local or metadata address (by literal address or by one of
/// the well-known metadata names).
pub fn is_metadata(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // The URL parser has already normalised addresses (`2852039166` is `169.254.169.254`).
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return is_metadata_ip(ip);
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    METADATA_HOSTS.contains(&name.as_str())
}

/// The upstream client's DNS: the system resolver, minus link-local and metadata addresses.
#[derive(Debug, Default)]
pub struct GuardedResolver;

/// The addresses acr may connect to among those a name resolved to.
pub fn usable_addresses(resolved: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    resolved
        .into_iter()
        .filter(|a| !is_metadata_ip(a.ip()))
        .collect()
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let lookup = host.clone();
            let resolved = tokio::task::spawn_blocking(move || {
                use std::net::ToSocketAddrs as _;
                (lookup.as_str(), 0)
                    .to_socket_addrs()
                    .map(Iterator::collect)
            })
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?
            .map_err(|e: std::io::Error| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            let resolved: Vec<SocketAddr> = resolved;
            let usable = usable_addresses(resolved);
            if usable.is_empty() {
                return Err(format!(
                    "{host} resolves only to link-local or metadata addresses: refused"
                )
                .into());
            }
            Ok(Box::new(usable.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Same scheme, host and port.
pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

fn same_host(a: &Url, b: &Url) -> bool {
    a.host_str().is_some() && a.host_str() == b.host_str()
}

/// Whether a redirect from `from` to `to` may be followed, for a request to `upstream`.
/// `blob`: the request is a blob GET/HEAD, which may go to another host (its storage).
pub fn check_redirect(
    ns: &str,
    upstream: &Url,
    from: &Url,
    to: &Url,
    blob: bool,
) -> Result<(), RegistryError> {
    let refuse = |why: &str| {
        RegistryError::bad_gateway(format!(
            "upstream {ns} redirected to {}: refused ({why})",
            redact_url(to.as_str())
        ))
    };
    if !matches!(to.scheme(), "http" | "https") {
        return Err(refuse("not http or https"));
    }
    if from.scheme() == "https" && to.scheme() != "https" {
        return Err(refuse("https never goes down to http"));
    }
    if is_metadata(to) && !same_host(to, upstream) {
        return Err(refuse("a link-local or metadata address"));
    }
    if !blob && !same_origin(to, upstream) {
        return Err(refuse(
            "manifests, tag lists and referrers are only followed within the upstream's own origin",
        ));
    }
    Ok(())
}

/// The realm of a Bearer challenge from `upstream`, if acr may ask it for tokens.
pub fn check_realm(ns: &str, upstream: &Url, realm: &str) -> Result<Url, RegistryError> {
    let refuse = |why: &str| {
        RegistryError::bad_gateway(format!(
            "upstream {ns} named the token realm {}: refused ({why})",
            redact_url(realm)
        ))
    };
    let url = Url::parse(realm).map_err(|_| refuse("not a URL"))?;
    match url.scheme() {
        "https" => {}
        "http" if upstream.scheme() == "http" && same_host(&url, upstream) => {}
        "http" => {
            return Err(refuse(
                "plain http is only for a token service on the host of a plain-http upstream",
            ))
        }
        _ => return Err(refuse("not https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("it carries credentials"));
    }
    if is_metadata(&url) && !same_host(&url, upstream) {
        return Err(refuse("a link-local or metadata address"));
    }
    Ok(url)
}

/// Query parameters whose values are secrets wherever they appear in a message.
const SECRET_PARAMS: &[&str] = &[
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
    "signature",
    "sig",
    "se",
    "st",
    "sv",
    "skoid",
    "sktid",
    "token",
    "access_token",
    "refresh_token",
    "password",
    "key-pair-id",
    "policy",
];

/// `url` without user info, query or fragment (a pre-signed URL's signature is in its query).
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = Url::parse(url) else {
        return redact_text(url);
    };
    let had_query = parsed.query().is_some();
    parsed.set_query(None);
    parsed.set_fragment(None);
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    let mut out = parsed.to_string();
    if had_query {
        out.push_str("?<redacted>");
    }
    out
}

/// `text` (a message built from upstream data) with the query of every URL in it removed and
/// the value of every secret-looking `name=value` replaced.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find_url(rest) {
        out.push_str(&redact_params(&rest[..start]));
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| c.is_whitespace() || "\"'<>`()[]{}\\,".contains(c))
            .unwrap_or(tail.len());
        let url = &tail[..end];
        match url.split_once(['?', '#']) {
            Some((bare, _)) => {
                out.push_str(bare);
                out.push_str("?<redacted>");
            }
            None => out.push_str(url),
        }
        rest = &tail[end..];
    }
    out.push_str(&redact_params(rest));
    out
}

fn find_url(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    match (lower.find("https://"), lower.find("http://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Replaces the value of each `NAME=value` whose NAME is a secret parameter.
fn redact_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let (before, after) = rest.split_at(eq);
        let name_start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .map_or(0, |i| i + 1);
        let name = &before[name_start..];
        out.push_str(before);
        out.push('=');
        let after = &after[1..];
        if SECRET_PARAMS.contains(&name.to_ascii_lowercase().as_str()) {
            let end = after
                .find(|c: char| c.is_whitespace() || "&;\"'<>,".contains(c))
                .unwrap_or(after.len());
            out.push_str("<redacted>");
            rest = &after[end..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn metadata_addresses() {
        for m in [
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.170.2/v2/credentials",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.google.internal./",
            "http://100.100.100.200/",
            // An address written as one number is still that address.
            "http://2852039166/",
        ] {
            assert!(is_metadata(&url(m)), "{m}");
        }
        for ok in [
            "https://registry-1.docker.io/",
            "http://127.0.0.1:5000/",
            "https://s3.amazonaws.com/",
        ] {
            assert!(!is_metadata(&url(ok)), "{ok}");
        }
    }

    #[test]
    fn names_that_resolve_to_metadata_addresses_are_unusable() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(
            usable_addresses([addr("169.254.169.254:80"), addr("[fd00:ec2::254]:80")]).is_empty()
        );
        assert_eq!(
            usable_addresses([addr("169.254.169.254:80"), addr("10.0.0.1:80")]),
            [addr("10.0.0.1:80")]
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let resolved = rt
            .block_on(reqwest::dns::Resolve::resolve(
                &GuardedResolver,
                "localhost".parse().unwrap(),
            ))
            .unwrap();
        assert!(resolved.into_iter().any(|a| a.ip().is_loopback()));
    }

    #[test]
    fn redirect_rules() {
        let up = url("https://registry.example");
        let from = url("https://registry.example/v2/a/blobs/sha256:x");
        let check = |to: &str, blob: bool| check_redirect("r", &up, &from, &url(to), blob);
        assert!(check("https://storage.example/x?sig=1", true).is_ok());
        assert!(check("https://registry.example/v2/b/manifests/1", false).is_ok());
        assert!(check("http://storage.example/x", true).is_err());
        assert!(check("https://169.254.169.254/latest", true).is_err());
        assert!(check("https://evil.example/tags.json", false).is_err());
        assert!(check("file:///etc/passwd", true).is_err());
        let e = check("http://storage.example/x?X-Amz-Signature=SECRET", true).unwrap_err();
        assert!(!e.message.contains("SECRET"), "{}", e.message);
        // An upstream that is itself on a link-local address may redirect to itself.
        let local = url("http://169.254.10.10:5000");
        let from = url("http://169.254.10.10:5000/v2/a/blobs/x");
        assert!(check_redirect(
            "r",
            &local,
            &from,
            &url("http://169.254.10.10:5000/b"),
            true
        )
        .is_ok());
    }

    #[test]
    fn realm_rules() {
        let https_up = url("https://registry.example");
        let http_up = url("http://127.0.0.1:5000");
        assert!(check_realm("r", &https_up, "https://auth.example/token").is_ok());
        assert!(check_realm("r", &https_up, "http://auth.example/token").is_err());
        assert!(check_realm("r", &https_up, "http://registry.example/token").is_err());
        assert!(check_realm("r", &http_up, "http://127.0.0.1:5001/token").is_ok());
        assert!(check_realm("r", &http_up, "http://127.0.0.2:5001/token").is_err());
        assert!(check_realm("r", &http_up, "https://169.254.169.254/token").is_err());
        assert!(check_realm("r", &https_up, "https://u:p@auth.example/token").is_err());
        assert!(check_realm("r", &https_up, "ftp://auth.example/token").is_err());
        assert!(check_realm("r", &https_up, "token").is_err());
    }

    #[test]
    fn urls_lose_their_secrets() {
        assert_eq!(
            redact_url("https://u:p@s3.example/b/k?X-Amz-Signature=abc&X-Amz-Date=1#f"),
            "https://s3.example/b/k?<redacted>"
        );
        let text = "denied: see https://blob.example/x?sv=1&se=2&sig=SECRET1 (or \
                    \"http://h/p?token=SECRET2\"); X-Amz-Signature=SECRET3&sig=SECRET4 ok=1";
        let red = redact_text(text);
        for s in ["SECRET1", "SECRET2", "SECRET3", "SECRET4"] {
            assert!(!red.contains(s), "{red}");
        }
        assert!(red.contains("https://blob.example/x?<redacted>"), "{red}");
        assert!(red.contains("ok=1"), "{red}");
        assert_eq!(redact_text("no urls here"), "no urls here");
    }
}
