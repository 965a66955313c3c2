//! The four resources a mirror serves and the methods it answers them with.

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Manifests,
    Blobs,
    Tags,
    Referrers,
}

impl Resource {
    pub const ALL: [Resource; 4] = [
        Resource::Manifests,
        Resource::Blobs,
        Resource::Tags,
        Resource::Referrers,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Resource::Manifests => "manifests",
            Resource::Blobs => "blobs",
            Resource::Tags => "tags",
            Resource::Referrers => "referrers",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The methods a mirror serves for this resource. acr never accepts a push.
    pub fn methods(self) -> &'static [Method] {
        match self {
            Resource::Manifests | Resource::Blobs => &[Method::Head, Method::Get],
            Resource::Tags | Resource::Referrers => &[Method::Get],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Head,
    Get,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Head => "head",
            Method::Get => "get",
        }
    }

    pub fn as_http(self) -> &'static str {
        match self {
            Method::Head => "HEAD",
            Method::Get => "GET",
        }
    }
}
