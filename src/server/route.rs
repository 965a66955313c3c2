//! Request paths of the OCI distribution API, parsed and validated before anything else runs.

use acr_plugins::oci::reference::is_repository;
use acr_plugins::oci::{Digest, Reference, RegistryError};
use acr_plugins::registry::{Method, Resource};

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `GET /v2/`: the API version check.
    Base,
    Api {
        method: Method,
        resource: Resource,
        /// The repository as the client wrote it (may start with a registry host when path
        /// routing is on).
        name: String,
        reference: String,
    },
}

/// Parses `method path`. Every failure is the OCI error to answer with.
pub fn parse(method: &str, path: &str) -> Result<Target, RegistryError> {
    let Some(rest) = path.strip_prefix("/v2") else {
        return Err(RegistryError::not_found(
            "NAME_UNKNOWN",
            format!("{path} is not part of the registry API (/v2/)"),
        ));
    };
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        other => {
            return Err(RegistryError::unsupported(format!(
                "acr is a pull-only mirror: {other} is not served"
            )))
        }
    };
    if rest.is_empty() || rest == "/" {
        return Ok(Target::Base);
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Err(RegistryError::not_found(
            "NAME_UNKNOWN",
            format!("{path} is not part of the registry API"),
        ));
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let n = segments.len();
    let (resource, name, reference) =
        if n >= 3 && segments[n - 2] == "tags" && segments[n - 1] == "list" {
            (Resource::Tags, &segments[..n - 2], "")
        } else if n >= 3 {
            let resource = match segments[n - 2] {
                "manifests" => Resource::Manifests,
                "blobs" => Resource::Blobs,
                "referrers" => Resource::Referrers,
                "uploads" if n >= 3 && segments[n - 3] == "blobs" => {
                    return Err(RegistryError::unsupported(
                        "acr is a pull-only mirror: uploads are not served",
                    ));
                }
                _ => {
                    if segments[n - 1] == "uploads" && segments[n - 2] == "blobs" {
                        return Err(RegistryError::unsupported(
                            "acr is a pull-only mirror: uploads are not served",
                        ));
                    }
                    return Err(RegistryError::not_found(
                        "NAME_UNKNOWN",
                        format!("{path} is not a registry API path"),
                    ));
                }
            };
            (resource, &segments[..n - 2], segments[n - 1])
        } else {
            if n == 2 && segments[1] == "uploads" {
                return Err(RegistryError::unsupported(
                    "acr is a pull-only mirror: uploads are not served",
                ));
            }
            return Err(RegistryError::not_found(
                "NAME_UNKNOWN",
                format!("{path} is not a registry API path"),
            ));
        };
    let name = name.join("/");
    if !is_repository(&name) {
        return Err(RegistryError::name_invalid(format!(
            "`{}` is not a valid repository name",
            name.chars().take(300).collect::<String>()
        )));
    }
    if !resource.methods().contains(&method) {
        return Err(RegistryError::unsupported(format!(
            "{} is not served for {}",
            method.as_http(),
            resource.name()
        )));
    }
    match resource {
        Resource::Manifests => {
            Reference::parse(reference).map_err(|e| {
                if reference.contains(':') {
                    RegistryError::digest_invalid(e)
                } else {
                    RegistryError::manifest_invalid(format!("`{reference}`: {e}"))
                }
            })?;
        }
        Resource::Blobs | Resource::Referrers => {
            Digest::parse(reference).map_err(RegistryError::digest_invalid)?;
        }
        Resource::Tags => {}
    }
    Ok(Target::Api {
        method,
        resource,
        name,
        reference: reference.to_string(),
    })
}

/// The decoded value of `key` in a query string (`a=1&ns=docker.io`).
pub fn query_value(query: &str, key: &str) -> Option<String> {
    query_pairs(query)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// Every pair of a query string, decoded (`+` is a space, `%XX` a byte).
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn routes() {
        assert_eq!(parse("GET", "/v2/").unwrap(), Target::Base);
        assert_eq!(parse("GET", "/v2").unwrap(), Target::Base);
        match parse("HEAD", "/v2/ghcr.io/org/app.v2/manifests/1.0").unwrap() {
            Target::Api { name, resource, .. } => {
                assert_eq!(name, "ghcr.io/org/app.v2");
                assert_eq!(resource, Resource::Manifests);
            }
            t => panic!("{t:?}"),
        }
        // A repository may itself contain a `manifests` component.
        match parse("GET", &format!("/v2/a/manifests/b/blobs/{D}")).unwrap() {
            Target::Api { name, resource, .. } => {
                assert_eq!(
                    (name.as_str(), resource),
                    ("a/manifests/b", Resource::Blobs)
                );
            }
            t => panic!("{t:?}"),
        }
        assert!(matches!(
            parse("GET", "/v2/x/tags/list").unwrap(),
            Target::Api {
                resource: Resource::Tags,
                ..
            }
        ));
    }

    #[test]
    fn hostile_paths() {
        let refused_with_code = [
            ("GET", "/v2/../etc/manifests/x", "NAME_INVALID"),
            ("GET", "/v2/a/blobs/sha256:zz", "DIGEST_INVALID"),
            ("GET", "/v2/a/manifests/sha256:zz", "DIGEST_INVALID"),
            ("GET", "/v2/A/manifests/x", "NAME_INVALID"),
            ("GET", "/v2/a//b/manifests/x", "NAME_INVALID"),
        ];
        for (method, path, code) in refused_with_code {
            assert_eq!(
                parse(method, path).unwrap_err().code,
                code,
                "{method} {path}"
            );
        }
        let refused_with_status = [
            ("PUT", "/v2/a/manifests/x", 405),
            ("POST", "/v2/a/blobs/uploads/", 405),
            ("GET", "/v2/a/blobs/uploads/", 405),
            ("HEAD", "/v2/a/tags/list", 405),
            ("GET", "/other", 404),
        ];
        for (method, path, status) in refused_with_status {
            assert_eq!(
                parse(method, path).unwrap_err().status,
                status,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn queries() {
        assert_eq!(
            query_value("ns=127.0.0.1%3A5000&n=2", "ns").as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(query_value("a=b", "ns"), None);
    }
}
