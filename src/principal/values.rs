//! The typed values a [`Principal`](super::Principal) carries: numeric ids, the OAuth client
//! id, the granted [`ResourceUrn`], the gateway's request id, scope and permission sets, and
//! how the token was verified.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::ser::{Serialize, Serializer};

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub i64);

        impl $name {
            /// The numeric value.
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }

        impl Serialize for $name {
            // Ids are 64-bit: serialise as strings, like the gateway, so JavaScript keeps them exact.
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0)
            }
        }
    };
}

numeric_id!(
    /// A Wacht deployment id.
    DeploymentId
);
numeric_id!(
    /// A Wacht user id (the end user who granted the token).
    UserId
);
numeric_id!(
    /// A Wacht organization id.
    OrganizationId
);
numeric_id!(
    /// A Wacht workspace id.
    WorkspaceId
);
numeric_id!(
    /// A Wacht API key id (`identity.key_id` of an API-key decision).
    ApiKeyId
);
numeric_id!(
    /// A Wacht organization or workspace membership id.
    MembershipId
);

/// The public OAuth client id (`oc_...`) of the application that holds the token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(Arc<str>);

impl ClientId {
    /// Wraps a client id string.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        ClientId(id.into())
    }

    pub(crate) fn into_arc(self) -> Arc<str> {
        self.0
    }

    /// The client id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ClientId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for ClientId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for ClientId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl Serialize for ClientId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// The resource the user granted at consent: a canonical Wacht URN.
///
/// `urn:wacht:user:<id>`, `urn:wacht:organization:<id>` and `urn:wacht:workspace:<id>` are parsed;
/// anything else is kept verbatim in [`ResourceUrn::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResourceUrn {
    /// `urn:wacht:user:<id>`: the user's own data.
    User(UserId),
    /// `urn:wacht:organization:<id>`.
    Organization(OrganizationId),
    /// `urn:wacht:workspace:<id>`.
    Workspace(WorkspaceId),
    /// Any other form, kept as sent.
    Other(Box<str>),
}

impl ResourceUrn {
    /// Parses a URN. Never fails: unknown forms become [`ResourceUrn::Other`].
    pub fn parse(urn: &str) -> Self {
        let parsed = urn.strip_prefix("urn:wacht:").and_then(|rest| {
            let (kind, id) = rest.split_once(':')?;
            // Canonical decimal only (`0`, or no leading zero), so `Display` gives back exactly
            // what the gateway sent; anything else stays `Other`.
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || (id.len() > 1 && id.starts_with('0')) {
                return None;
            }
            let id: i64 = id.parse().ok()?;
            match kind {
                "user" => Some(ResourceUrn::User(UserId(id))),
                "organization" => Some(ResourceUrn::Organization(OrganizationId(id))),
                "workspace" => Some(ResourceUrn::Workspace(WorkspaceId(id))),
                _ => None,
            }
        });
        parsed.unwrap_or_else(|| ResourceUrn::Other(urn.into()))
    }

    /// The organization id, if this is an organization URN.
    pub fn organization(&self) -> Option<OrganizationId> {
        match self {
            ResourceUrn::Organization(id) => Some(*id),
            _ => None,
        }
    }

    /// The workspace id, if this is a workspace URN.
    pub fn workspace(&self) -> Option<WorkspaceId> {
        match self {
            ResourceUrn::Workspace(id) => Some(*id),
            _ => None,
        }
    }

    /// The user id, if this is a user URN.
    pub fn user(&self) -> Option<UserId> {
        match self {
            ResourceUrn::User(id) => Some(*id),
            _ => None,
        }
    }
}

impl fmt::Display for ResourceUrn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceUrn::User(id) => write!(f, "urn:wacht:user:{id}"),
            ResourceUrn::Organization(id) => write!(f, "urn:wacht:organization:{id}"),
            ResourceUrn::Workspace(id) => write!(f, "urn:wacht:workspace:{id}"),
            ResourceUrn::Other(raw) => f.write_str(raw),
        }
    }
}

impl FromStr for ResourceUrn {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(ResourceUrn::parse(s))
    }
}

impl Serialize for ResourceUrn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The gateway's `request_id` of a check (`req_<decimal>`), kept without a heap allocation
/// when it has the usual form.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(RequestIdRepr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum RequestIdRepr {
    Numeric(u64),
    Other(Box<str>),
}

impl RequestId {
    /// Bytes it holds on the heap (none in the usual form).
    pub(crate) fn heap_bytes(&self) -> usize {
        match &self.0 {
            RequestIdRepr::Numeric(_) => 0,
            RequestIdRepr::Other(id) => id.len(),
        }
    }

    /// Wraps a request id as sent by the gateway.
    pub fn new(id: &str) -> Self {
        let numeric = id
            .strip_prefix("req_")
            .filter(|d| !d.is_empty() && !d.starts_with('0') && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse().ok());
        RequestId(match numeric {
            Some(n) => RequestIdRepr::Numeric(n),
            None => RequestIdRepr::Other(id.into()),
        })
    }
}

impl From<&str> for RequestId {
    fn from(id: &str) -> Self {
        RequestId::new(id)
    }
}

impl From<String> for RequestId {
    fn from(id: String) -> Self {
        RequestId::new(&id)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            RequestIdRepr::Numeric(n) => write!(f, "req_{n}"),
            RequestIdRepr::Other(s) => f.write_str(s),
        }
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A sorted, de-duplicated set of strings (scopes or permissions) with exact, case-sensitive
/// membership, as the gateway's evaluator uses.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct StringSet(Arc<[Box<str>]>);

impl StringSet {
    /// Builds a set from any strings.
    pub fn new<I, S>(items: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        let mut v: Vec<Box<str>> = items.into_iter().map(Into::into).collect();
        v.sort_unstable();
        v.dedup();
        StringSet(v.into())
    }

    pub(crate) fn into_arc(self) -> Arc<[Box<str>]> {
        self.0
    }

    pub(crate) fn from_arc(items: Arc<[Box<str>]>) -> Self {
        StringSet(items)
    }

    /// Exact membership.
    pub fn contains(&self, item: &str) -> bool {
        self.0.binary_search_by(|p| (**p).cmp(item)).is_ok()
    }

    /// Iterates in sorted order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.0.iter().map(|s| &**s)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for StringSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Serialize for StringSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// How a token was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VerifiedBy {
    /// The Wacht gateway's authz check (opaque tokens): live state at the time of the check.
    Gateway,
    /// This server, from the JWT's RS256 signature and claims: the state when it was issued.
    JwtSignature,
}

impl VerifiedBy {
    /// `gateway` or `jwt_signature` (as serialized in a [`Principal`](super::Principal)).
    pub fn as_str(self) -> &'static str {
        match self {
            VerifiedBy::Gateway => "gateway",
            VerifiedBy::JwtSignature => "jwt_signature",
        }
    }
}

/// One entry of a gateway answer's `rate_limits[]`: a rule of the app's scheme that matched
/// the request, and its budget after counting it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitState {
    /// The rule's label, `<max_requests>/<window>` (`1000/60s`, `20/500ms`).
    pub rule: Arc<str>,
    /// Requests allowed per window.
    pub limit: u64,
    /// Requests left in the window after this one.
    pub remaining: u64,
}

impl RateLimitState {
    /// A rule's state as a gateway answer reports it.
    pub fn new(rule: impl Into<Arc<str>>, limit: u64, remaining: u64) -> Self {
        RateLimitState {
            rule: rule.into(),
            limit,
            remaining,
        }
    }
}

/// Which credential a request presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CredentialKind {
    /// An opaque OAuth access token (`oat_...`), checked by the gateway.
    OAuthAccessToken,
    /// A JWT access token, verified here from its signature.
    JwtAccessToken,
    /// A Wacht API key (one of the configured prefixes), checked by the gateway.
    ApiKey,
}

impl CredentialKind {
    /// `oauth_access_token`, `jwt_access_token` or `api_key` (as serialized in a
    /// [`Principal`](super::Principal)).
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::OAuthAccessToken => "oauth_access_token",
            CredentialKind::JwtAccessToken => "jwt_access_token",
            CredentialKind::ApiKey => "api_key",
        }
    }

    /// True for OAuth access tokens, opaque or JWT.
    pub fn is_oauth(self) -> bool {
        !matches!(self, CredentialKind::ApiKey)
    }
}
