//! Requests to the upstream, with auth: the cached `Authorization` is sent; a 401 renews the
//! token once (from the challenge in that 401) and retries; redirects are followed by hand so
//! `Authorization` never goes to another host.

use reqwest::header::{HeaderMap, AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};

use super::challenge::{self, Challenge};
use super::credentials::Credentials;
use super::{RegistryError, Resource};
use crate::Context;

/// The pull scope of the request's repository.
pub fn scope(cx: &Context) -> String {
    let name = cx.request.as_ref().map(|r| r.name.as_str()).unwrap_or("");
    format!("repository:{name}:pull")
}

fn pick(challenges: Vec<Challenge>) -> Option<Challenge> {
    let mut basic = None;
    for c in challenges {
        if c.is_bearer() {
            return Some(c);
        }
        if c.is_basic() && basic.is_none() {
            basic = Some(c);
        }
    }
    basic
}

fn challenges_of(headers: &HeaderMap) -> Option<Challenge> {
    let joined: Vec<&str> = headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    pick(challenge::parse(&joined.join(", ")))
}

/// `.authn`: learns the upstream's challenge (one `GET /v2/` per upstream, cached) and gets
/// the `Authorization` for this request's scope, from the cache when it can.
///
/// An upstream that cannot be reached is not an error here: the request that follows finds
/// out for itself, and a cached manifest can still be served (stale-if-error).
pub async fn authenticate(cx: &mut Context) -> Result<(), RegistryError> {
    match try_authenticate(cx).await {
        Err(e) if e.status >= 500 => {
            tracing::debug!("cannot authenticate to the upstream now: {}", e.message);
            cx.authorization = None;
            Ok(())
        }
        other => other,
    }
}

async fn try_authenticate(cx: &mut Context) -> Result<(), RegistryError> {
    let (shared, upstream) = parts(cx)?;
    cx.authn = true;
    let challenge = match shared.auth.challenge(&upstream.base) {
        Some(c) => c,
        None => {
            // Many cold requests at once probe the upstream once; the rest wait for the answer.
            let lock = shared.auth.probe_lock(&upstream.base);
            let _probe = lock.lock().await;
            match shared.auth.challenge(&upstream.base) {
                Some(c) => c,
                None => {
                    crate::store::Metrics::inc(&shared.metrics.upstream_requests);
                    let resp = shared
                        .http
                        .get(upstream.url("/v2/"))
                        .send()
                        .await
                        .map_err(|e| unreachable(&upstream.ns, &upstream.base, e))?;
                    let c = if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
                        challenges_of(resp.headers())
                    } else {
                        None
                    };
                    shared.auth.set_challenge(&upstream.base, c.clone());
                    c
                }
            }
        }
    };
    let Some(challenge) = challenge else {
        cx.authorization = None;
        return Ok(());
    };
    cx.authorization = authorize(cx, &shared, &upstream, &challenge, false).await?;
    Ok(())
}

/// The `Authorization` for this request's scope under `challenge` (a fresh token if `refresh`).
/// (The future holds no borrow of the context, which is not `Sync`.)
fn authorize(
    cx: &Context,
    shared: &std::sync::Arc<super::Shared>,
    upstream: &super::Upstream,
    challenge: &Challenge,
    refresh: bool,
) -> impl std::future::Future<Output = Result<Option<String>, RegistryError>> + Send + 'static {
    let scope = scope(cx);
    let creds = cx.credentials.clone();
    let (shared, ns, challenge) = (shared.clone(), upstream.ns.clone(), challenge.clone());
    async move {
        shared
            .auth
            .authorization(
                &shared.http,
                &ns,
                &challenge,
                &scope,
                creds.as_ref(),
                refresh,
            )
            .await
    }
}

fn parts(cx: &Context) -> Result<(std::sync::Arc<super::Shared>, super::Upstream), RegistryError> {
    let shared = cx
        .registry
        .clone()
        .ok_or_else(|| RegistryError::bad_gateway("registry plugins run only in a proxy route"))?;
    let upstream = cx
        .upstream
        .clone()
        .ok_or_else(|| RegistryError::bad_gateway("no upstream was chosen for this request"))?;
    Ok((shared, upstream))
}

fn unreachable(ns: &str, base: &str, e: reqwest::Error) -> RegistryError {
    let what = if e.is_timeout() {
        "timed out"
    } else {
        "is unreachable"
    };
    RegistryError::bad_gateway(format!("upstream {ns} ({base}) {what}: {e}"))
}

/// Sends `method path` to the upstream with `headers`, following redirects (at most 5, without
/// Authorization across hosts). A 401 after `.authn` renews the token once and retries.
pub async fn send(
    cx: &mut Context,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, String)],
) -> Result<reqwest::Response, RegistryError> {
    send_with(cx, method, path, headers, true).await
}

/// `send`, choosing whether a short `Retry-After` is waited for: a revalidation that can
/// serve what is cached had better not wait.
pub async fn send_with(
    cx: &mut Context,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, String)],
    wait_to_retry: bool,
) -> Result<reqwest::Response, RegistryError> {
    let (shared, upstream) = parts(cx)?;
    let mut renewed = false;
    let mut retries = 0;
    loop {
        let mut url = upstream.url(path);
        let mut auth = cx.authorization.clone();
        let mut hops = 0;
        let resp = loop {
            let mut req = shared.http.request(method.clone(), &url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if let Some(a) = &auth {
                req = req.header(AUTHORIZATION, a);
            }
            crate::store::Metrics::inc(&shared.metrics.upstream_requests);
            let resp = req
                .send()
                .await
                .map_err(|e| unreachable(&upstream.ns, &upstream.base, e))?;
            if !resp.status().is_redirection() {
                break resp;
            }
            let Some(location) = resp.headers().get(LOCATION).and_then(|l| l.to_str().ok()) else {
                break resp;
            };
            hops += 1;
            if hops > 5 {
                return Err(RegistryError::bad_gateway(format!(
                    "upstream {} redirected more than 5 times",
                    upstream.ns
                )));
            }
            let next = resp.url().join(location).map_err(|_| {
                RegistryError::bad_gateway(format!("upstream {} sent a bad redirect", upstream.ns))
            })?;
            if next.host_str() != resp.url().host_str()
                || next.port_or_known_default() != resp.url().port_or_known_default()
            {
                auth = None;
            }
            url = next.to_string();
        };
        // 429 and 503 with a short Retry-After: wait and ask again (at most twice), so a
        // brief rate limit or restart upstream does not fail the pull. A long one is the
        // client's to see (with its Retry-After).
        let status = resp.status().as_u16();
        if wait_to_retry && (status == 429 || status == 503) && retries < MAX_RETRIES {
            if let Some(wait) = retry_after(resp.headers()).filter(|w| *w <= MAX_RETRY_WAIT) {
                retries += 1;
                tracing::info!(upstream = %upstream.ns, status, wait_ms = wait.as_millis() as u64, "upstream asked to retry later; waiting");
                drop(resp);
                tokio::time::sleep(wait).await;
                continue;
            }
        }
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED && cx.authn && !renewed {
            renewed = true;
            let Some(challenge) = challenges_of(resp.headers()) else {
                return Err(refused(&upstream.ns, cx.credentials.as_ref()));
            };
            shared
                .auth
                .set_challenge(&upstream.base, Some(challenge.clone()));
            cx.authorization = authorize(cx, &shared, &upstream, &challenge, true).await?;
            continue;
        }
        return Ok(resp);
    }
}

/// How often and how long acr waits for an upstream that answered 429 or 503 with
/// `Retry-After`.
const MAX_RETRIES: u32 = 2;
const MAX_RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `Retry-After` as a wait: delay-seconds, or an HTTP date (IMF-fixdate) from now.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<std::time::Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(std::time::Duration::from_secs(secs));
    }
    let at = parse_http_date(v)?;
    let now = crate::store::now_secs();
    Some(std::time::Duration::from_secs(at.saturating_sub(now)))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` as seconds since the epoch.
fn parse_http_date(text: &str) -> Option<u64> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| x == month)? as i64 + 1;
    let d: i64 = day.parse().ok()?;
    let y: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time.split(':').filter_map(|p| p.parse().ok()).collect();
    let [h, mi, s] = hms.as_slice() else {
        return None;
    };
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + s).ok()
}

fn refused(ns: &str, creds: Option<&Credentials>) -> RegistryError {
    match creds {
        Some(c) => RegistryError::unauthorized(format!(
            "upstream {ns} refused the credentials (user {} from {})",
            c.username, c.source
        )),
        None => RegistryError::unauthorized(format!(
            "upstream {ns} needs credentials and none were found: add `.login` and `.authn` to the route, and a credential source"
        )),
    }
}

/// Maps an upstream's error reply to the error acr answers with.
/// (The future holds no borrow of the context, which is not `Sync`.)
pub fn upstream_error(
    cx: &Context,
    resp: reqwest::Response,
    resource: Resource,
) -> impl std::future::Future<Output = RegistryError> + Send + 'static {
    let ns = cx
        .upstream
        .as_ref()
        .map(|u| u.ns.clone())
        .unwrap_or_default();
    let creds = cx.credentials.clone();
    // With `.forward-auth` the client authenticates to the upstream itself: it needs the
    // upstream's challenge.
    let challenges: Vec<String> = if cx.forward_auth && resp.status().as_u16() == 401 {
        resp.headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect()
    } else {
        Vec::new()
    };
    async move {
        let mut e = error_from(&ns, creds.as_ref(), resp, resource).await;
        if !challenges.is_empty() {
            e.message = format!("upstream {ns} needs the client's own credentials");
            for c in &challenges {
                e = e.with_header("WWW-Authenticate", c);
            }
        }
        e
    }
}

/// Like `upstream_error`, for callers that hold no context.
pub async fn error_from(
    ns: &str,
    creds: Option<&Credentials>,
    resp: reqwest::Response,
    resource: Resource,
) -> RegistryError {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = resp.bytes().await.unwrap_or_default();
    let (code, message) = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|j| {
            let e = j.get("errors")?.get(0)?;
            Some((
                e.get("code")?.as_str()?.to_string(),
                e.get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("")
                    .to_string(),
            ))
        })
        .unwrap_or_default();
    match status {
        401 => refused(ns, creds),
        403 => RegistryError::denied(format!("upstream {ns} denied access: {message}")),
        404 => {
            let code = match code.as_str() {
                "NAME_UNKNOWN" => "NAME_UNKNOWN",
                "BLOB_UNKNOWN" => "BLOB_UNKNOWN",
                "MANIFEST_UNKNOWN" => "MANIFEST_UNKNOWN",
                _ => match resource {
                    Resource::Blobs => "BLOB_UNKNOWN",
                    Resource::Manifests => "MANIFEST_UNKNOWN",
                    _ => "NAME_UNKNOWN",
                },
            };
            let message = if message.is_empty() {
                "not found".to_string()
            } else {
                message
            };
            RegistryError::not_found(code, format!("upstream {ns}: {message}"))
        }
        429 => {
            let e = RegistryError::new(
                429,
                "TOOMANYREQUESTS",
                format!("upstream {ns} is rate limiting"),
            );
            match retry_after {
                Some(r) => e.with_header("Retry-After", &r),
                None => e,
            }
        }
        400..=499 => RegistryError {
            status,
            code: "UNKNOWN",
            message: format!("upstream {ns} answered {status} {code} {message}")
                .trim()
                .to_string(),
            headers: Vec::new(),
        },
        // An upstream that says when to come back: the client hears it too.
        503 => {
            let e = RegistryError::new(
                503,
                "UNAVAILABLE",
                format!("upstream {ns} is unavailable (503)"),
            );
            match retry_after {
                Some(r) => e.with_header("Retry-After", &r),
                None => e,
            }
        }
        _ => RegistryError::bad_gateway(format!("upstream {ns} answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(std::time::Duration::from_secs(3)));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(std::time::Duration::ZERO));
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
