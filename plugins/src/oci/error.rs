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

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(404, code, message)
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

/// One constructor per error acr answers with: its name, the HTTP status and the OCI code.
macro_rules! error_kinds {
    ($($(#[$doc:meta])* $name:ident => $status:literal $code:literal,)*) => {
        impl RegistryError {
            $($(#[$doc])* pub fn $name(message: impl Into<String>) -> Self {
                Self::new($status, $code, message)
            })*
        }
    };
}

error_kinds! {
    name_invalid => 400 "NAME_INVALID",
    digest_invalid => 400 "DIGEST_INVALID",
    manifest_invalid => 400 "MANIFEST_INVALID",
    unauthorized => 401 "UNAUTHORIZED",
    denied => 403 "DENIED",
    unsupported => 405 "UNSUPPORTED",
    /// The upstream failed in a way the client cannot fix: a bad gateway.
    bad_gateway => 502 "UNAVAILABLE",
    /// The upstream did not answer within a bound: a gateway timeout.
    gateway_timeout => 504 "UNAVAILABLE",
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for RegistryError {}
