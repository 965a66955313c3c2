//! The operator endpoints: `/healthz` (the process answers), `/readyz` (the store can be
//! written and an upstream answers), `/status` (an HTML page, see `status`), `/status.json`
//! (its numbers for programs) and `/metrics` (Prometheus text). They answer before routing and client authentication.

use std::sync::Arc;
use std::time::{Duration, Instant};

use acr_plugins::oci::{Body, RegistryError};
use acr_plugins::registry::Reply;
use bytes::Bytes;

use super::response::{json_reply, proxy_gone, text_reply};
use super::{observe, status, upstream, ProxyHost};

impl ProxyHost {
    /// The answer of an operator endpoint, or `None` when `path` is not one.
    pub(super) async fn operator_endpoint(
        &self,
        key: &(String, String),
        method: &str,
        path: &str,
    ) -> Option<Result<Reply, RegistryError>> {
        if method == "GET" || method == "HEAD" {
            match path {
                "/healthz" => return Some(Ok(text_reply(200, "text/plain", "ok\n".into()))),
                "/readyz" => {
                    let answer = match self.readiness(key).await {
                        Ok(why) => text_reply(200, "text/plain", format!("ready: {why}\n")),
                        Err(why) => text_reply(503, "text/plain", format!("not ready: {why}\n")),
                    };
                    return Some(Ok(answer));
                }
                "/status" | "/status.json" => {
                    let pipeline = self.current();
                    let Some(proxy) = pipeline.proxy(key) else {
                        return Some(Err(proxy_gone()));
                    };
                    let store = self.state_of(proxy).store.clone().ok().flatten();
                    // The local root, and the shared store as `: .cache` names it (no secrets).
                    let root = store.as_ref().map(|s| match &s.config.remote {
                        Some(shared) => format!("{} and {shared}", s.root().display()),
                        None => s.root().display().to_string(),
                    });
                    let (metrics, root) = (&self.shared.metrics, root.as_deref());
                    let reply = if path == "/status.json" {
                        json_reply(&status::json(metrics, &self.observer, root))
                    } else {
                        let html = status::page(proxy, metrics, &self.observer, root);
                        text_reply(200, "text/html; charset=utf-8", html)
                    };
                    return Some(Ok(reply));
                }
                _ => {}
            }
        }
        if path == "/metrics" && method == "GET" {
            let mut text = self.shared.metrics.render();
            text.push_str(&self.observer.render());
            return Some(Ok(Reply {
                status: 200,
                headers: vec![
                    ("Content-Type".into(), "text/plain; version=0.0.4".into()),
                    ("Content-Length".into(), text.len().to_string()),
                ],
                body: Body::Full(Bytes::from(text)),
            }));
        }
        None
    }

    /// Samples the store's counters every 10 s for `/status` (once per process).
    pub(super) fn start_sampling(self: &Arc<Self>) {
        if self
            .sampling
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let observer = self.observer.clone();
        let metrics = self.shared.metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(observe::SAMPLE_EVERY);
            loop {
                tick.tick().await;
                observer.sample(&metrics);
            }
        });
    }

    /// `/readyz`: the store can be written and at least one upstream answers HTTP (any
    /// status: a 401 is an upstream that is there). Checked at most every 5 s.
    async fn readiness(&self, key: &(String, String)) -> Result<String, String> {
        if let Ok(last) = self.readiness.lock() {
            if let Some((at, answer)) = last.as_ref() {
                if at.elapsed() < Duration::from_secs(5) {
                    return answer.clone();
                }
            }
        }
        let answer = self.check_ready(key).await;
        if let Ok(mut last) = self.readiness.lock() {
            *last = Some((Instant::now(), answer.clone()));
        }
        answer
    }

    async fn check_ready(&self, key: &(String, String)) -> Result<String, String> {
        let pipeline = self.current();
        let proxy = pipeline
            .proxy(key)
            .ok_or("the running pipeline no longer declares this proxy")?
            .clone();
        drop(pipeline);
        let store = self.state_of(&proxy).store.clone()?;
        let store_state = match &store {
            Some(s) => {
                let probe = s.temp_file("ready");
                std::fs::write(&probe, b"ok").map_err(|e| {
                    format!("the store at {} cannot be written: {e}", s.root().display())
                })?;
                let _ = std::fs::remove_file(&probe);
                format!("store {} writable", s.root().display())
            }
            None => "no store".to_string(),
        };
        let mut bases: Vec<String> = Vec::new();
        for host in &proxy.mirror_hosts {
            if let Ok(c) = upstream::choose(
                &proxy,
                Some(upstream::mirror_ns(host).as_str()),
                "library/x",
            ) {
                bases.push(c.upstream.base);
            }
        }
        for endpoint in &proxy.settings.endpoints {
            bases.push(endpoint.url.clone());
        }
        if bases.is_empty() {
            return Ok(format!("{store_state}; no fixed upstream"));
        }
        let mut errors = Vec::new();
        for base in &bases {
            let probe = self
                .shared
                .http
                .get(format!("{base}/v2/"))
                .timeout(Duration::from_secs(3))
                .send()
                .await;
            match probe {
                Ok(r) => {
                    return Ok(format!(
                        "{store_state}; upstream {base} answers ({})",
                        r.status().as_u16()
                    ))
                }
                Err(e) => errors.push(format!("{base}: {e}")),
            }
        }
        Err(format!("no upstream answers: {}", errors.join("; ")))
    }
}
