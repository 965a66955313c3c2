//! A real S3 server (s3s-fs, with SigV4 auth) on a listener: what the tests start in process
//! (`S3`) and what the benchmark runs as a program (`bench/s3_server.rs`). A top-level
//! directory of `root` is a bucket.
//!
//! s3s-fs checks `If-None-Match` / `If-Match` and then writes, in two steps; S3 does both at
//! once. Conditional writes go one at a time here so that, as on S3, exactly one of several
//! racing writers wins (what acr's leases rely on).

use std::path::Path;
use std::sync::{Arc, Mutex};

use hyper_util::rt::{TokioExecutor, TokioIo};

/// The server's accept loop, to spawn on a tokio runtime; every request's `METHOD /path?query`
/// goes to `log`.
pub fn serve(
    listener: tokio::net::TcpListener,
    root: &Path,
    access_key: &str,
    secret_key: &str,
    log: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let fs = s3s_fs::FileSystem::new(root).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(access_key, secret_key));
    let service = builder.build();
    let conditional = Arc::new(tokio::sync::Mutex::new(()));
    Ok(async move {
        let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        while let Ok((socket, _)) = listener.accept().await {
            let (service, log, conditional) = (service.clone(), log.clone(), conditional.clone());
            let logged = hyper::service::service_fn(move |req: hyper::Request<_>| {
                if let Ok(mut l) = log.lock() {
                    l.push(format!("{} {}", req.method(), req.uri()));
                }
                let one_at_a_time = req.method() == hyper::Method::PUT
                    && (req.headers().contains_key("if-none-match")
                        || req.headers().contains_key("if-match"));
                let (service, conditional) = (service.clone(), conditional.clone());
                async move {
                    let _turn = match one_at_a_time {
                        true => Some(conditional.lock().await),
                        false => None,
                    };
                    hyper::service::Service::call(&service, req).await
                }
            });
            let conn = http
                .serve_connection(TokioIo::new(socket), logged)
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    })
}
