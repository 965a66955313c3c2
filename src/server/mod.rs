//! The HTTP side: serves a block's `+ .proxy` with hyper (HTTP/1.1 and h2c, or https). One
//! file per stage, in the order a request meets them:
//!
//! 1. `host`: `ProxyHost`, the engine's `Host`: starting a proxy makes its `state` (store,
//!    container tokens, client auth, from the typed settings) and its `tls` acceptor.
//! 2. `connection`: the listener and each connection, under the bounds of `limits`.
//! 3. `request`: one request's way through the stages below, then its response and log line.
//! 4. `container_tokens`, `snapshotter_auth`, `admission`: the service endpoints (`POST
//!    /container-token`, `/validate-creds`, `/auth`, `/token`); `replicas`: what the other
//!    replicas of a shared cache ask (`/_acr/peer/...`).
//! 5. `operator`: `/healthz`, `/readyz`, `/status` (the page in `status`), `/metrics`.
//! 6. `route`: the path parsed into a registry target.
//! 7. `admission`: client authentication of the target (`clients` holds users and tokens;
//!    `throttle` limits failed logins per address).
//! 8. `registry`: `/v2/`, or the container token's rewrite (`container_tokens`), the upstream
//!    (`upstream`), the request, the context with the store, the route's calls.
//! 9. `response`: the reply or OCI error as a response, and the request's log line (`observe`
//!    counts it).
//!
//! The pipeline is read from the reload channel per request, so an edit that compiles changes
//! what new requests do without a restart.

pub mod admission;
pub mod clients;
pub mod connection;
pub mod container_tokens;
pub mod host;
pub mod limits;
pub mod observe;
pub mod operator;
pub mod peer;
pub mod registry;
pub mod replicas;
pub mod request;
pub mod response;
pub mod route;
pub mod snapshotter_auth;
pub mod state;
pub mod status;
pub mod store;
pub mod throttle;
pub mod tls;
pub mod upstream;

pub use host::ProxyHost;
pub use response::{error_response, reply_response, rfc3339_now, RequestLine, ResponseBody};
