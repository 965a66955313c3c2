//! Requests to the upstream, with auth: the cached `Authorization` is sent; a 401 renews the
//! token once (from the challenge in that 401) and retries; redirects are followed by hand,
//! by the rules of `destination` (no scheme downgrade, no metadata address, documents only
//! within the upstream's origin, `Authorization` never to another host, at most
//! `limits::MAX_REDIRECTS` hops).
//!
//! Every wait is bounded (`limits`): the connection, the status line and headers of each
//! answer, and each pause of a body. An upstream that does not answer in time is a 504 with
//! the OCI error body; messages built from upstream data never carry a URL's query.

use reqwest::header::{HeaderMap, AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use std::time::{Duration, Instant};

use super::challenge::{self, Challenge};
use super::credentials::Credentials;
use super::fetch::{idle_of, read_body};
use super::RequestState;
use super::{destination, limits, Resource};
use crate::oci::RegistryError;

/// The pull scope of the request's repository.
pub fn scope(cx: &impl RequestState) -> String {
    let name = cx.request().map(|r| r.name.as_str()).unwrap_or("");
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
/// An upstream that cannot be reached is not an error here: a cached manifest can still be
/// served (stale-if-error). The failure is kept in the context, and `send` answers it
/// without asking the silent upstream a second time.
pub async fn authenticate(cx: &mut impl RequestState) -> Result<(), RegistryError> {
    match try_authenticate(cx).await {
        Err(e) if e.status >= 500 => {
            tracing::debug!("cannot authenticate to the upstream now: {}", e.message);
            let auth = cx.auth();
            *auth.authorization = None;
            *auth.unavailable = Some(e);
            Ok(())
        }
        other => other,
    }
}

async fn try_authenticate(cx: &mut impl RequestState) -> Result<(), RegistryError> {
    let (shared, upstream) = parts(cx)?;
    *cx.auth().answers_challenges = true;
    let challenge = challenge_of(&shared, &upstream).await?;
    let Some(challenge) = challenge else {
        *cx.auth().authorization = None;
        return Ok(());
    };
    let authorization = authorize(cx, &shared, &upstream, &challenge, false).await?;
    *cx.auth().authorization = authorization;
    Ok(())
}

/// The challenge of `upstream`: the cached one, else one `GET /v2/` (cached for the next
/// requests). Many cold requests at once probe the upstream once; the rest wait for the
/// answer, and take the probe's error when it failed (never a probe each, one after another).
async fn challenge_of(
    shared: &super::Shared,
    upstream: &super::Upstream,
) -> Result<Option<Challenge>, RegistryError> {
    if let Some(c) = shared.auth.challenge(&upstream.base) {
        return Ok(c);
    }
    let lock = shared.auth.probe_lock(&upstream.base);
    let waited_from = Instant::now();
    let mut last_failure = lock.lock().await;
    if let Some((at, e)) = last_failure.as_ref() {
        if *at >= waited_from {
            return Err(e.clone());
        }
    }
    if let Some(c) = shared.auth.challenge(&upstream.base) {
        return Ok(c);
    }
    let probe = shared.http.get(upstream.url("/v2/"));
    let resp = match timed_send(shared, &upstream.ns, &upstream.base, probe).await {
        Ok(r) => r,
        Err(e) => {
            *last_failure = Some((Instant::now(), e.clone()));
            return Err(e);
        }
    };
    let c = if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
        challenges_of(resp.headers())
    } else {
        None
    };
    *last_failure = None;
    shared.auth.set_challenge(&upstream.base, c.clone());
    Ok(c)
}

/// Learns `upstream`'s challenge ahead of the first client (what a proxy does as it starts,
/// for the upstreams its pipeline names), so a first pull does not wait for the probe's round
/// trip. A failure is only logged: the first request probes again.
pub async fn learn_challenge(shared: &super::Shared, upstream: &super::Upstream) {
    if let Err(e) = challenge_of(shared, upstream).await {
        tracing::debug!(upstream = %upstream.ns, "could not learn the upstream's challenge yet: {}", e.message);
    }
}

/// The `Authorization` for this request's scope under `challenge` (a fresh token if `refresh`).
/// (The future holds no borrow of the context, which is not `Sync`.)
fn authorize(
    cx: &impl RequestState,
    shared: &std::sync::Arc<super::Shared>,
    upstream: &super::Upstream,
    challenge: &Challenge,
    refresh: bool,
) -> impl std::future::Future<Output = Result<Option<String>, RegistryError>> + Send + 'static {
    let scope = scope(cx);
    let creds = cx.credentials().cloned();
    let (shared, upstream, challenge) = (shared.clone(), upstream.clone(), challenge.clone());
    async move {
        shared
            .auth
            .authorization(
                &shared.http,
                &shared.limits,
                &upstream,
                &challenge,
                &scope,
                creds.as_ref(),
                refresh,
            )
            .await
    }
}

fn parts(
    cx: &impl RequestState,
) -> Result<(std::sync::Arc<super::Shared>, super::Upstream), RegistryError> {
    let shared = cx
        .shared()
        .cloned()
        .ok_or_else(|| RegistryError::bad_gateway("registry plugins run only in a proxy route"))?;
    let upstream = cx
        .upstream()
        .cloned()
        .ok_or_else(|| RegistryError::bad_gateway("no upstream was chosen for this request"))?;
    Ok((shared, upstream))
}

/// A transport error as the client hears it: 504 for a timeout, else 502; never the URL's
/// query (reqwest's message names the URL, which may be a pre-signed one).
fn unreachable(ns: &str, base: &str, e: reqwest::Error) -> RegistryError {
    let timed_out = e.is_timeout();
    let why = destination::redact_text(&e.without_url().to_string());
    let base = destination::redact_url(base);
    if timed_out {
        RegistryError::gateway_timeout(format!("upstream {ns} ({base}) timed out: {why}"))
    } else {
        RegistryError::bad_gateway(format!("upstream {ns} ({base}) is unreachable: {why}"))
    }
}

/// Sends `req` and waits for the status line and headers, at most the connect and header
/// bounds together. Every request to an upstream goes this way, so it is counted here
/// (`acr_upstream_requests_total`, and per upstream), with the rate limit the answer announces.
async fn timed_send(
    shared: &super::Shared,
    ns: &str,
    base: &str,
    req: reqwest::RequestBuilder,
) -> Result<reqwest::Response, RegistryError> {
    let bound = shared.limits.connect + shared.limits.header;
    crate::metrics::Metrics::inc(&shared.metrics.upstream_requests);
    let counters = shared.metrics.upstreams.of(base);
    counters.requested();
    match tokio::time::timeout(bound, req.send()).await {
        Ok(Ok(resp)) => {
            counters.rate_limits(resp.headers());
            Ok(resp)
        }
        Ok(Err(e)) => Err(unreachable(ns, base, e)),
        Err(_) => Err(RegistryError::gateway_timeout(format!(
            "upstream {ns} ({}) did not answer in {} s",
            destination::redact_url(base),
            bound.as_secs_f32()
        ))),
    }
}

/// Whether `path` (`/v2/<name>/<resource>/<reference>[?query]`) asks for a blob: its
/// second-to-last segment is `blobs` (a repository may have `blobs` in its name).
fn is_blob_path(path: &str) -> bool {
    let bare = path.split('?').next().unwrap_or(path);
    let mut segments = bare.rsplit('/');
    segments.next();
    segments.next() == Some("blobs")
}

/// Sends `method path` to the upstream with `headers`, following redirects by the rules of
/// `destination`. A 401 after `.authn` renews the token once and retries.
pub async fn send(
    cx: &mut impl RequestState,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, String)],
) -> Result<reqwest::Response, RegistryError> {
    send_with(cx, method, path, headers, true).await
}

/// `send`, choosing whether a short `Retry-After` is waited for: a revalidation that can
/// serve what is cached had better not wait.
pub async fn send_with(
    cx: &mut impl RequestState,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, String)],
    wait_to_retry: bool,
) -> Result<reqwest::Response, RegistryError> {
    let (shared, upstream) = parts(cx)?;
    // `.authn` found the upstream silent or unreachable a moment ago: do not wait for it twice.
    if let Some(e) = cx.auth().unavailable.as_ref() {
        return Err(e.clone());
    }
    let origin = reqwest::Url::parse(&upstream.base).map_err(|_| {
        RegistryError::bad_gateway(format!("upstream {} has no usable address", upstream.ns))
    })?;
    let blob = is_blob_path(path);
    let mut renewed = false;
    let mut retries = 0;
    loop {
        let mut url = upstream.url(path);
        let mut auth = cx.auth().authorization.clone();
        let mut hops = 0;
        let resp = loop {
            let mut req = shared.http.request(method.clone(), &url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if let Some(a) = &auth {
                req = req.header(AUTHORIZATION, a);
            }
            let resp = timed_send(&shared, &upstream.ns, &upstream.base, req).await?;
            if !resp.status().is_redirection() {
                break resp;
            }
            let Some(location) = resp.headers().get(LOCATION).and_then(|l| l.to_str().ok()) else {
                break resp;
            };
            hops += 1;
            if hops > limits::MAX_REDIRECTS {
                return Err(RegistryError::bad_gateway(format!(
                    "upstream {} redirected more than {} times",
                    upstream.ns,
                    limits::MAX_REDIRECTS
                )));
            }
            let next = resp.url().join(location).map_err(|_| {
                RegistryError::bad_gateway(format!("upstream {} sent a bad redirect", upstream.ns))
            })?;
            destination::check_redirect(&upstream.ns, &origin, resp.url(), &next, blob)
                .inspect_err(|e| tracing::warn!(upstream = %upstream.ns, "{}", e.message))?;
            // Authorization is for the upstream's own origin only; once dropped it stays
            // dropped.
            if !destination::same_origin(&next, &origin) {
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
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED
            && *cx.auth().answers_challenges
            && !renewed
        {
            renewed = true;
            let Some(challenge) = challenges_of(resp.headers()) else {
                return Err(refused(&upstream.ns, cx.credentials()));
            };
            // Kept for the upstream only once it worked: a challenge acr refuses (a realm
            // off limits) must not replace the good one for every other request.
            let authorization = authorize(cx, &shared, &upstream, &challenge, true).await?;
            shared
                .auth
                .set_challenge(&upstream.base, Some(challenge.clone()));
            *cx.auth().authorization = authorization;
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
    let now = crate::clock::now_secs();
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

/// The credentials were refused: the client hears which upstream, never whose credentials or
/// where acr keeps them; the log names the source (never the secret).
fn refused(ns: &str, creds: Option<&Credentials>) -> RegistryError {
    match creds {
        Some(c) => {
            tracing::warn!(upstream = %ns, source = %c.source, "the upstream refused acr's credentials");
            RegistryError::unauthorized(format!("upstream {ns} refused acr's credentials"))
        }
        None => RegistryError::unauthorized(format!(
            "upstream {ns} needs credentials and acr has none for it"
        )),
    }
}

/// Maps an upstream's error reply to the error acr answers with.
/// (The future holds no borrow of the context, which is not `Sync`.)
pub fn upstream_error(
    cx: &impl RequestState,
    resp: reqwest::Response,
    resource: Resource,
) -> impl std::future::Future<Output = RegistryError> + Send + 'static {
    let ns = cx.upstream().map(|u| u.ns.clone()).unwrap_or_default();
    let creds = cx.credentials().cloned();
    let idle = idle_of(cx);
    // With `.forward-auth` the client authenticates to the upstream itself: it needs the
    // upstream's challenge.
    let challenges: Vec<String> = if cx.forwards_client_auth() && resp.status().as_u16() == 401 {
        resp.headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect()
    } else {
        Vec::new()
    };
    async move {
        let mut e = error_from(&ns, creds.as_ref(), resp, resource, idle).await;
        if !challenges.is_empty() {
            e.message = format!("upstream {ns} needs the client's own credentials");
            for c in &challenges {
                e = e.with_header("WWW-Authenticate", c);
            }
        }
        e
    }
}

/// Like `upstream_error`, for callers that hold no context. At most
/// `limits::MAX_ERROR_BODY_BYTES` of the body are read, each pause at most `idle`; the
/// upstream's message has the query of every URL in it removed (a pre-signed URL's signature).
pub async fn error_from(
    ns: &str,
    creds: Option<&Credentials>,
    resp: reqwest::Response,
    resource: Resource,
    idle: Duration,
) -> RegistryError {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = read_body(resp, limits::MAX_ERROR_BODY_BYTES, idle)
        .await
        .unwrap_or_default();
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
    let message = destination::redact_text(&message);
    let code: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    // An upstream that says when to come back (429, 503): the client hears it too.
    let told_to_wait = |status: u16, code: &'static str, message: String| {
        let e = RegistryError::new(status, code, message);
        match &retry_after {
            Some(r) => e.with_header("Retry-After", r),
            None => e,
        }
    };
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
        429 => told_to_wait(
            429,
            "TOOMANYREQUESTS",
            format!("upstream {ns} is rate limiting"),
        ),
        400..=499 => RegistryError {
            status,
            code: "UNKNOWN",
            message: format!("upstream {ns} answered {status} {code} {message}")
                .trim()
                .to_string(),
            headers: Vec::new(),
        },
        503 => told_to_wait(
            503,
            "UNAVAILABLE",
            format!("upstream {ns} is unavailable (503)"),
        ),
        _ => RegistryError::bad_gateway(format!("upstream {ns} answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths_are_told_from_documents() {
        assert!(is_blob_path("/v2/a/blobs/sha256:x"));
        assert!(is_blob_path("/v2/a/b/blobs/sha256:x?hop=1"));
        assert!(!is_blob_path("/v2/blobs/x/manifests/1"));
        assert!(!is_blob_path("/v2/a/tags/list"));
        assert!(!is_blob_path("/v2/a/referrers/sha256:x"));
    }

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
