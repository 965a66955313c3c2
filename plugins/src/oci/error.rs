//! Errors a registry answers with: an HTTP status and an OCI error code.

use std::fmt;

/// An error that becomes `{"errors":[{"code","message","detail"}]}` with `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Extra headers for the reply (e.g. `Retry-After` from an upstream's 429).
    pub headers: Vec<(String, String)>,
}

impl RegistryError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn name_invalid(message: impl Into<String>) -> Self {
        Self::new(400, "NAME_INVALID", message)
    }

    pub fn digest_invalid(message: impl Into<String>) -> Self {
        Self::new(400, "DIGEST_INVALID", message)
    }

    pub fn manifest_invalid(message: impl Into<String>) -> Self {
        Self::new(400, "MANIFEST_INVALID", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "UNAUTHORIZED", message)
    }

    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(403, "DENIED", message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(405, "UNSUPPORTED", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(404, code, message)
    }

    /// The upstream failed in a way the client cannot fix: a bad gateway.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(502, "UNAVAILABLE", message)
    }

    /// The upstream did not answer within a bound: a gateway timeout.
    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(504, "UNAVAILABLE", message)
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The OCI error body.
    pub fn body(&self) -> String {
        serde_json::json!({
            "errors": [{ "code": self.code, "message": self.message, "detail": null }]
        })
        .to_string()
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for RegistryError {}
