//! `GET /auth?remote_url=URL`: the overlaybd snapshotter's credential request, answered only
//! to this node (see `peer`) with what the manifests route's `.login` calls find.

use acr_plugins::oci::RegistryError;
use acr_plugins::registry::{ClientRequest, Reply};
use acr_plugins::Context;

use super::response::json_reply;
use super::{peer, route, upstream, ProxyHost};

impl ProxyHost {
    /// `GET /auth?remote_url=URL`: the overlaybd snapshotter's credential request (its `http`
    /// credential mode). Answers the credentials the manifests route's `.login` calls find for
    /// that registry, in the snapshotter's format, and only to this node: upstream credentials
    /// never leave the machine acr runs on.
    pub(super) async fn answer_auth(
        &self,
        key: &(String, String),
        query: &str,
        peer: std::net::SocketAddr,
    ) -> Result<Reply, RegistryError> {
        let trace = format!("{:016x}", acr_plugins::clock::now_ms());
        let refuse = |status: u16, message: String| {
            let body = serde_json::json!({"traceId": trace, "success": false, "message": message});
            let mut r = json_reply(&body);
            r.status = status;
            Ok(r)
        };
        if !peer::is_trusted_local(peer) {
            tracing::warn!(%peer, "/auth refused: not a loopback client owned by root or by acr's user");
            return refuse(
                403,
                "acr answers /auth only to this node's root (the overlaybd snapshotter) or to the user acr runs as".into(),
            );
        }
        let Some(remote) = route::query_value(query, "remote_url") else {
            return refuse(
                400,
                "give the registry URL: /auth?remote_url=https://REGISTRY/v2/...".into(),
            );
        };
        let host = remote
            .split_once("://")
            .map_or(remote.as_str(), |(_, r)| r)
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        let pipeline = self.current();
        let Some(proxy) = pipeline.proxy(key) else {
            return refuse(
                503,
                "the running pipeline no longer declares this proxy".into(),
            );
        };
        let choice = match upstream::choose(proxy, Some(&host), "library/x") {
            Ok(c) => c,
            Err(e) => return refuse(404, e.message),
        };
        let logins: Vec<_> = proxy
            .routes
            .iter()
            .find(|r| r.resource == acr_plugins::registry::Resource::Manifests)
            .map(|r| {
                r.calls
                    .iter()
                    .filter(|c| c.spec.caps.upstream_login)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        drop(pipeline);
        let mut cx = Context::new(self.base_dir.clone());
        cx.world_dir = self.world_dir.clone();
        cx.registry = Some(self.shared.clone());
        cx.request = Some(ClientRequest {
            method: acr_plugins::registry::Method::Get,
            resource: acr_plugins::registry::Resource::Manifests,
            name: choice.name.clone(),
            reference: "latest".into(),
            client_prefix: choice.client_prefix.clone(),
            client_ns: None,
            query: Vec::new(),
            accept: Vec::new(),
            range: None,
            authorization: None,
            opt_in: Vec::new(),
        });
        cx.upstream = Some(choice.upstream.clone());
        if let Err(e) = crate::engine::run_calls(&logins, &mut cx, |_| {}).await {
            return refuse(503, e.to_string());
        }
        let Some(creds) = cx.credentials.take() else {
            return refuse(
                404,
                format!("acr has no credentials for {host}: add `.login` to the manifests route and a credential source"),
            );
        };
        let username = if creds.is_identity_token() {
            acr_plugins::registry::credentials::TOKEN_USER.to_string()
        } else {
            creds.username.clone()
        };
        tracing::info!(registry = %host, user = %username, "credentials handed to the local snapshotter");
        Ok(json_reply(&serde_json::json!({
            "traceId": trace,
            "success": true,
            "data": {"auths": {host: {"username": username, "password": creds.secret}}},
        })))
    }
}
