//! Every bound acr puts on what it asks of an upstream, in one place.
//!
//! acr trusts the pipeline file and the upstreams it names, never what they answer: a registry
//! or token service may stall, redirect anywhere, name any realm or send an endless body. The
//! waits below are the defaults of [`UpstreamLimits`], which `acr mirror start` can change
//! (`--upstream-connect-timeout`, `--upstream-header-timeout`, `--upstream-idle-timeout`);
//! the sizes and counts are fixed.

use std::time::Duration;

/// How long acr waits for a TCP (and TLS) connection to an upstream or token service.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long acr waits, once a request is sent, for the status line and headers of the answer.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a body may stay silent between two pieces before the transfer is given up.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a whole token request may take (its answer is small: see below).
pub const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// How many redirects one upstream request follows.
pub const MAX_REDIRECTS: u32 = 5;
/// The largest token-service answer acr reads (a JWT is a few KiB).
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 64 << 10;
/// The most of an upstream's error body acr reads to find its OCI error message.
pub const MAX_ERROR_BODY_BYTES: usize = 64 << 10;

/// Cached upstream tokens (one per upstream, credential and repository scope). A client that
/// asks for 10 000 repositories costs at most this many entries; the least recently used go.
pub const MAX_CACHED_TOKENS: usize = 4096;
/// Cached challenges, probe locks and credential lookups: one per upstream host.
pub const MAX_CACHED_UPSTREAMS: usize = 1024;

/// The waits of upstream requests: the defaults above unless the command line says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamLimits {
    pub connect: Duration,
    pub header: Duration,
    pub body_idle: Duration,
}

impl Default for UpstreamLimits {
    fn default() -> Self {
        Self {
            connect: CONNECT_TIMEOUT,
            header: HEADER_TIMEOUT,
            body_idle: BODY_IDLE_TIMEOUT,
        }
    }
}

impl UpstreamLimits {
    /// The longest a token request may take under these limits.
    pub fn token(&self) -> Duration {
        TOKEN_TIMEOUT.min(self.connect + self.header + self.body_idle)
    }
}
