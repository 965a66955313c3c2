//! The tag list (`/v2/<name>/tags/list`) passed on from the upstream: its `Link` pointed back
//! at acr, and paged by acr when the upstream sent it whole although the client asked for `n`
//! or `last`.

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, LINK};

use super::client::{send, upstream_error};
use super::fetch::{encode, header, read_limited};
use super::{Body, ClientRequest, Reply, RequestState, Resource};
use crate::oci::media::MAX_MANIFEST_BYTES;
use crate::oci::RegistryError;

/// The tag list of the requested repository.
pub async fn tag_list(
    cx: &mut impl RequestState,
    req: &ClientRequest,
) -> Result<Reply, RegistryError> {
    document(
        cx,
        req,
        format!("/v2/{}/tags/list", req.name),
        "application/json",
    )
    .await
}

/// A JSON document (a tag list), passed on with its Link header pointed at acr.
async fn document(
    cx: &mut impl RequestState,
    req: &ClientRequest,
    path: String,
    default_type: &str,
) -> Result<Reply, RegistryError> {
    let mut path = path;
    if !req.query.is_empty() {
        let query: Vec<String> = req
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        path = format!("{path}?{}", query.join("&"));
    }
    let resp = send(
        cx,
        reqwest::Method::GET,
        &path,
        &[("Accept", format!("{default_type}, application/json"))],
    )
    .await?;
    if !resp.status().is_success() {
        return Err(upstream_error(cx, resp, req.resource).await);
    }
    let content_type =
        header(&resp, CONTENT_TYPE.as_str()).unwrap_or_else(|| default_type.to_string());
    let link = header(&resp, LINK.as_str());
    let filters = header(&resp, "oci-filters-applied");
    let mut body = read_limited(cx, resp, MAX_MANIFEST_BYTES).await?;
    let mut link = link.map(|l| rewrite_link(&l, req));
    if req.resource == Resource::Tags && link.is_none() {
        if let Some((page, next)) = paginate_tags(&body, req) {
            body = page;
            link = next;
        }
    }
    let mut headers = vec![
        ("Content-Type".to_string(), content_type),
        ("Content-Length".to_string(), body.len().to_string()),
    ];
    if let Some(link) = link {
        headers.push(("Link".to_string(), link));
    }
    if let Some(f) = filters {
        headers.push(("OCI-Filters-Applied".to_string(), f));
    }
    Ok(Reply {
        status: 200,
        headers,
        body: Body::Full(body),
    })
}

/// Pages a tag list the upstream sent whole although the client asked for `n` or `last`
/// (CNCF distribution 2.x ignores both): the tags in lexical order after `last`, at most `n`,
/// and a `Link` to the next page when more remain, as the distribution spec asks. `None`
/// when the client asked for no page or the document is not a tag list.
fn paginate_tags(body: &[u8], req: &ClientRequest) -> Option<(Bytes, Option<String>)> {
    let param = |k: &str| {
        req.query
            .iter()
            .find(|(q, _)| q == k)
            .map(|(_, v)| v.clone())
    };
    let n = param("n").and_then(|n| n.parse::<usize>().ok());
    let last = param("last");
    if n.is_none() && last.is_none() {
        return None;
    }
    let mut doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut tags: Vec<String> = doc
        .get("tags")?
        .as_array()?
        .iter()
        .filter_map(|t| t.as_str().map(String::from))
        .collect();
    tags.sort();
    tags.dedup();
    if let Some(last) = &last {
        tags.retain(|t| t.as_str() > last.as_str());
    }
    let mut next = None;
    if let Some(n) = n {
        if tags.len() > n {
            tags.truncate(n);
            if let Some(last_tag) = tags.last() {
                let mut query = format!("n={n}&last={}", encode(last_tag));
                if let Some(ns) = &req.client_ns {
                    query.push_str(&format!("&ns={}", encode(ns)));
                }
                next = Some(format!(
                    "<{}/tags/list?{query}>; rel=\"next\"",
                    req.client_prefix
                ));
            }
        }
    }
    doc["tags"] = serde_json::Value::from(tags);
    let page = serde_json::to_vec(&doc).ok()?;
    Some((Bytes::from(page), next))
}

/// `</v2/library/x/tags/list?n=2&last=b>; rel="next"` as the client addressed the repository.
fn rewrite_link(link: &str, req: &ClientRequest) -> String {
    let upstream_prefix = format!("/v2/{}/", req.name);
    let Some(start) = link.find(&upstream_prefix) else {
        return link.to_string();
    };
    let rest = without_ns(&link[start + upstream_prefix.len()..]);
    let mut out = format!("{}{}/{}", &link[..start], req.client_prefix, rest);
    if let Some(ns) = &req.client_ns {
        if let Some(close) = out.find('>') {
            let sep = if out[..close].contains('?') { '&' } else { '?' };
            out.insert_str(close, &format!("{sep}ns={}", encode(ns)));
        }
    }
    out
}

/// `tags/list?n=2&ns=docker.io>; rel="next"` without its `ns` parameters: a chained mirror
/// (another acr) keeps the `ns` acr sent it in its `Link`, and acr adds its own client's.
fn without_ns(link_rest: &str) -> String {
    let Some((target, after)) = link_rest.split_once('>') else {
        return link_rest.to_string();
    };
    let Some((path, query)) = target.split_once('?') else {
        return link_rest.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !(p.starts_with("ns=") || *p == "ns"))
        .collect();
    if kept.is_empty() {
        format!("{path}>{after}")
    } else {
        format!("{path}?{}>{after}", kept.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Method;

    /// A client's tag list request for `test` (sent with `ns=docker.io`) with `query`.
    fn tags_request(query: &[(&str, &str)]) -> ClientRequest {
        ClientRequest {
            method: Method::Get,
            resource: Resource::Tags,
            name: "library/test".into(),
            reference: String::new(),
            client_prefix: "/v2/test".into(),
            client_ns: Some("docker.io".into()),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            accept: vec![],
            range: None,
            authorization: None,
            opt_in: vec![],
        }
    }

    #[test]
    fn tags_are_paged_when_the_upstream_ignores_n() {
        let mut req = tags_request(&[("n", "2")]);
        let body = br#"{"name":"library/test","tags":["v2s2","b","1","a"]}"#;
        let (page, link) = paginate_tags(body, &req).unwrap();
        let page: serde_json::Value = serde_json::from_slice(&page).unwrap();
        assert_eq!(page["tags"], serde_json::json!(["1", "a"]));
        assert_eq!(
            link.as_deref(),
            Some(r#"</v2/test/tags/list?n=2&last=a&ns=docker.io>; rel="next""#)
        );
        req.query.push(("last".into(), "a".into()));
        let (page, link) = paginate_tags(body, &req).unwrap();
        let page: serde_json::Value = serde_json::from_slice(&page).unwrap();
        assert_eq!(page["tags"], serde_json::json!(["b", "v2s2"]));
        assert_eq!(link, None);
        req.query.clear();
        assert!(paginate_tags(body, &req).is_none());
    }

    #[test]
    fn link_points_back_at_acr() {
        let req = tags_request(&[]);
        assert_eq!(
            rewrite_link(
                r#"</v2/library/test/tags/list?n=2&last=b>; rel="next""#,
                &req
            ),
            r#"</v2/test/tags/list?n=2&last=b&ns=docker.io>; rel="next""#
        );
        // A chained acr's Link has the ns acr sent it: one ns, the client's, comes back.
        for chained in [
            r#"</v2/library/test/tags/list?n=2&last=b&ns=docker.io>; rel="next""#,
            r#"</v2/library/test/tags/list?ns=docker.io&n=2&last=b>; rel="next""#,
        ] {
            assert_eq!(
                rewrite_link(chained, &req),
                r#"</v2/test/tags/list?n=2&last=b&ns=docker.io>; rel="next""#
            );
        }
        let mut no_ns = tags_request(&[]);
        no_ns.client_ns = None;
        assert_eq!(
            rewrite_link(
                r#"</v2/library/test/tags/list?ns=docker.io>; rel="next""#,
                &no_ns
            ),
            r#"</v2/test/tags/list>; rel="next""#
        );
    }
}
