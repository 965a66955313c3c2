//! A request's way through a proxy, in stages: the service endpoints that are not registry
//! routes (`POST /container-token` and `/validate-creds`, `/auth`, `/token`), then the
//! operator endpoints, the route, client authentication, and the registry route itself; the
//! answer becomes a response (`response`) and one log line.

use std::time::Instant;

use acr_plugins::oci::RegistryError;
use acr_plugins::registry::Reply;
use hyper::body::Incoming;
use hyper::{Request, Response};

use super::container_tokens::is_service_path;
use super::registry::ApiPath;
use super::response::{
    error_response, loggable, proxy_gone, redact_path, reply_response, RequestLine, ResponseBody,
};
use super::route::{self, Target};
use super::ProxyHost;

impl ProxyHost {
    /// Answers one request, and logs it once it is over: for a streamed body that is when
    /// the last byte left (or the transfer broke), so `bytes` and `ms` are what really
    /// happened, not what the headers promised.
    pub async fn handle(
        &self,
        key: &(String, String),
        req: Request<Incoming>,
        peer: std::net::SocketAddr,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let method = req.method().as_str().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let ns = route::query_value(&query, "ns");
        let (result, upstream) = if method == "POST" && is_service_path(&path) {
            (self.answer_post(key, req, &path, peer.ip()).await, None)
        } else if method == "GET" && path == "/auth" {
            (self.answer_auth(key, &query, peer).await, None)
        } else if (method == "GET" || method == "POST") && path == "/token" {
            (self.answer_token(key, req, &query, peer.ip()).await, None)
        } else if method == "GET" && path.starts_with(super::replicas::PREFIX) {
            (self.answer_peer(key, req.headers(), &path).await, None)
        } else {
            let headers = req.headers();
            self.answer(
                key,
                headers,
                &method,
                &path,
                &query,
                ns.as_deref(),
                peer.ip(),
            )
            .await
        };
        let mut line = RequestLine {
            method,
            path: loggable(&redact_path(&path)),
            ns: ns.as_deref().map(loggable).unwrap_or_else(|| "-".into()),
            upstream: upstream
                .as_deref()
                .map(loggable)
                .unwrap_or_else(|| "-".into()),
            status: 0,
            started,
            bytes: 0,
            failed: None,
            observer: Some(self.observer.clone()),
        };
        match result {
            Ok(reply) => {
                line.status = reply.status;
                reply_response(reply, &line.method.clone(), Some(line))
            }
            Err(e) => {
                let response = error_response(&e);
                line.status = e.status;
                line.bytes = if line.method == "HEAD" {
                    0
                } else {
                    e.body().len() as u64
                };
                line.emit();
                response
            }
        }
    }

    /// Answers a request to the proxy `key` (everything but the POST services, `/auth` and
    /// `/token`). Returns the answer and the upstream it went to, once chosen.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn answer(
        &self,
        key: &(String, String),
        headers: &hyper::HeaderMap,
        method: &str,
        path: &str,
        query: &str,
        ns: Option<&str>,
        peer: std::net::IpAddr,
    ) -> (Result<Reply, RegistryError>, Option<String>) {
        if let Some(answer) = self.operator_endpoint(key, method, path).await {
            return (answer, None);
        }
        let target = match route::parse(method, path) {
            Ok(t) => t,
            Err(e) => return (Err(e), None),
        };
        let pipeline = self.current();
        let Some(proxy) = pipeline.proxy(key) else {
            // A reload removed the proxy: `/v2/` still answers, the rest cannot.
            return match target {
                Target::Base => (self.answer_base(None, headers, ns).await, None),
                Target::Api { .. } => (Err(proxy_gone()), None),
            };
        };
        let state = self.state_of(proxy);
        if let Err(e) = self.admit(proxy, &state, headers, &target, ns, peer).await {
            return (Err(e), None);
        }
        match target {
            Target::Base => (self.answer_base(Some(proxy), headers, ns).await, None),
            Target::Api {
                method,
                resource,
                name,
                reference,
            } => {
                let api = ApiPath {
                    method,
                    resource,
                    name,
                    reference,
                };
                self.answer_api(proxy, &state, headers, query, ns, api)
                    .await
            }
        }
    }
}
