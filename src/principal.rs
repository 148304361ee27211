//! The verified caller: [`Principal`], its typed ids and the granted [`ResourceUrn`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::reject::ChallengeParams;
use crate::scopes::ScopeHierarchy;

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
    /// `gateway` or `jwt_signature` (as serialized in a [`Principal`]).
    pub fn as_str(self) -> &'static str {
        match self {
            VerifiedBy::Gateway => "gateway",
            VerifiedBy::JwtSignature => "jwt_signature",
        }
    }
}

/// What the gateway (or a verified JWT) said about a token: the raw material of a
/// [`Principal`].
///
/// A custom [`Gateway`](crate::gateway::Gateway) builds this with [`Grant::new`] and the
/// public fields; the verifier checks it (pinning, expiry) and turns it into a `Principal`.
/// Fields a source cannot know are `None`, never invented (a JWT carries no deployment id,
/// no RFC 8707 resource and no gateway request id).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Grant {
    /// The OAuth client id (`identity.key_name`).
    pub client_id: ClientId,
    /// `metadata.granted_resource`, parsed.
    pub granted_resource: Option<ResourceUrn>,
    /// `metadata.scopes`.
    pub scopes: StringSet,
    /// The effective `permissions`.
    pub permissions: StringSet,
    /// `metadata.expires_at`.
    pub expires_at: SystemTime,
    /// `metadata.oauth_resource`: the audience the token was requested for.
    pub oauth_resource: Option<Arc<str>>,
    /// The issuer (`headers["x-wacht-oauth-issuer"]`, or the JWT's `iss`).
    pub issuer: Option<Arc<str>>,
    /// `identity.deployment_id` (the gateway path only).
    pub deployment_id: Option<DeploymentId>,
    /// `identity.owner_user_id` (the JWT's `sub`).
    pub owner_user_id: Option<UserId>,
    /// The gateway's `request_id` for this check (the gateway path only).
    pub request_id: Option<RequestId>,
    /// The Wacht session the token belongs to (the JWT's `sid`).
    pub session_id: Option<Arc<str>>,
    /// The token's own id (the JWT's `jti`).
    pub token_id: Option<Arc<str>>,
    /// How the token was verified.
    pub verified_by: VerifiedBy,
}

impl Grant {
    /// A grant for `client_id` expiring at `expires_at`, verified by the gateway, with
    /// nothing else known; fill in the public fields.
    pub fn new(client_id: impl Into<Arc<str>>, expires_at: SystemTime) -> Self {
        Grant {
            client_id: ClientId::new(client_id),
            granted_resource: None,
            scopes: StringSet::default(),
            permissions: StringSet::default(),
            expires_at,
            oauth_resource: None,
            issuer: None,
            deployment_id: None,
            owner_user_id: None,
            request_id: None,
            session_id: None,
            token_id: None,
            verified_by: VerifiedBy::Gateway,
        }
    }
}

struct Inner {
    data: Grant,
    challenge: Arc<ChallengeParams>,
    hierarchy: Arc<ScopeHierarchy>,
}

/// The verified caller of a request: the OAuth client, what the user granted it, and its
/// effective permissions.
///
/// Inserted into the request extensions by [`WachtAuthLayer`](crate::WachtAuthLayer). Cloning
/// is cheap (one `Arc`). With the `axum` feature it is an extractor (`Principal` or
/// `Option<Principal>`); Tonic handlers read `request.extensions().get::<Principal>()`.
///
/// It never holds the access token, so `Debug` and `Serialize` are safe to log.
#[derive(Clone)]
pub struct Principal(Arc<Inner>);

impl Principal {
    pub(crate) fn new(data: Grant, challenge: Arc<ChallengeParams>, hierarchy: Arc<ScopeHierarchy>) -> Self {
        Principal(Arc::new(Inner {
            data,
            challenge,
            hierarchy,
        }))
    }

    /// Builds a principal from a grant directly, for handler unit tests. Inside a server,
    /// principals come from [`WachtAuthLayer`](crate::WachtAuthLayer).
    pub fn from_grant(grant: Grant) -> Self {
        Principal::new(grant, ChallengeParams::shared_default(), Arc::default())
    }

    /// The OAuth client id (`identity.key_name`, `x-wacht-oauth-client-id`).
    pub fn client_id(&self) -> &ClientId {
        &self.0.data.client_id
    }

    /// The resource granted at consent (`metadata.granted_resource`), if any.
    pub fn granted_resource(&self) -> Option<&ResourceUrn> {
        self.0.data.granted_resource.as_ref()
    }

    /// The token's scopes.
    pub fn scopes(&self) -> &StringSet {
        &self.0.data.scopes
    }

    /// The effective permissions: the scopes plus the permissions their scope definitions map
    /// to for the granted organization or workspace.
    pub fn permissions(&self) -> &StringSet {
        &self.0.data.permissions
    }

    /// True if the principal has this effective permission (exact, case-sensitive), or one
    /// that implies it in the layer's [`ScopeHierarchy`] (none by default). Every guard judges
    /// with this.
    pub fn has_permission(&self, permission: &str) -> bool {
        let held = &self.0.data.permissions;
        held.contains(permission)
            || (!self.0.hierarchy.is_empty() && self.0.hierarchy.grants_any(held.iter(), permission))
    }

    /// True if the token carries this scope.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.0.data.scopes.contains(scope)
    }

    /// When the access token expires.
    pub fn expires_at(&self) -> SystemTime {
        self.0.data.expires_at
    }

    /// When the access token expires, as RFC 3339 UTC text (`2026-06-29T14:05:11.482913Z`).
    pub fn expires_at_rfc3339(&self) -> String {
        crate::timefmt::rfc3339(self.0.data.expires_at)
    }

    /// The RFC 8707 resource (audience) the token was requested for (`metadata.oauth_resource`).
    pub fn oauth_resource(&self) -> Option<&str> {
        self.0.data.oauth_resource.as_deref()
    }

    /// The OAuth issuer (`x-wacht-oauth-issuer`), e.g. `https://auth.example.com`.
    pub fn issuer(&self) -> Option<&str> {
        self.0.data.issuer.as_deref()
    }

    /// The Wacht deployment that issued the token, when the gateway said (a JWT does not).
    pub fn deployment_id(&self) -> Option<DeploymentId> {
        self.0.data.deployment_id
    }

    /// The end user who granted the token.
    pub fn owner_user_id(&self) -> Option<UserId> {
        self.0.data.owner_user_id
    }

    /// The gateway `request_id` of the check that verified this token (for support and
    /// audit); `None` for a JWT verified here.
    pub fn request_id(&self) -> Option<&RequestId> {
        self.0.data.request_id.as_ref()
    }

    /// The Wacht session the token belongs to (a JWT's `sid`), if known.
    pub fn session_id(&self) -> Option<&str> {
        self.0.data.session_id.as_deref()
    }

    /// The token's id (a JWT's `jti`), if known.
    pub fn token_id(&self) -> Option<&str> {
        self.0.data.token_id.as_deref()
    }

    /// How the token was verified: by the gateway (live state) or from a JWT's signature
    /// (the state when it was issued).
    pub fn verified_by(&self) -> VerifiedBy {
        self.0.data.verified_by
    }

    /// Everything the gateway said about the token.
    pub fn grant(&self) -> &Grant {
        &self.0.data
    }

    /// An opaque, stable key for who is calling: the issuer, the deployment, the OAuth client
    /// and the end user who granted it (SHA-256 over those fields, length-prefixed; 64 hex
    /// digits). Every token of the same client and user gives the same key (a refreshed or
    /// stepped-up token keeps the caller's state); another client, user, issuer or deployment
    /// gives another key. It holds nothing secret and no part of the token.
    ///
    /// Bind server-side state to the caller with it, as the MCP security best practices ask:
    /// store an MCP 2026-07-28 state handle under `"{binding_key}:{handle}"` (so a handle
    /// presented by anyone else is simply not found), and pass it as the associated data when
    /// sealing and opening MRTR `requestState` (rmcp's `RequestStateCodec` with
    /// `SealOptions::associated_data`), so state sealed for one caller does not open for
    /// another. The MCP tool guard binds legacy `Mcp-Session-Id` sessions with the same key.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use tower_wacht::Principal;
    ///
    /// /// Conversation state a tool hands out as an opaque handle.
    /// #[derive(Default)]
    /// struct Handles(HashMap<String, String>);
    ///
    /// impl Handles {
    ///     fn put(&mut self, caller: &Principal, handle: &str, state: String) {
    ///         self.0.insert(format!("{}:{handle}", caller.binding_key()), state);
    ///     }
    ///     /// `None` for an unknown handle and for another caller's handle alike.
    ///     fn get(&self, caller: &Principal, handle: &str) -> Option<&String> {
    ///         self.0.get(&format!("{}:{handle}", caller.binding_key()))
    ///     }
    /// }
    /// ```
    pub fn binding_key(&self) -> String {
        use sha2::{Digest, Sha256};
        let d = &self.0.data;
        let mut hash = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        // An absent field is an empty one; a present id is 8 bytes, so the two never meet.
        field(d.issuer.as_deref().unwrap_or_default().as_bytes());
        field(
            d.deployment_id
                .map(|id| id.get().to_be_bytes())
                .as_ref()
                .map_or(&[], |b| b),
        );
        field(d.client_id.as_str().as_bytes());
        field(
            d.owner_user_id
                .map(|id| id.get().to_be_bytes())
                .as_ref()
                .map_or(&[], |b| b),
        );
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    pub(crate) fn challenge(&self) -> &Arc<ChallengeParams> {
        &self.0.challenge
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.0.data;
        f.debug_struct("Principal")
            .field("client_id", &d.client_id.as_str())
            .field("granted_resource", &d.granted_resource)
            .field("scopes", &d.scopes)
            .field("permissions", &d.permissions)
            .field("expires_at", &crate::timefmt::rfc3339(d.expires_at))
            .field("oauth_resource", &d.oauth_resource)
            .field("issuer", &d.issuer)
            .field("deployment_id", &d.deployment_id.map(|d| d.0))
            .field("owner_user_id", &d.owner_user_id.map(|u| u.0))
            .field("request_id", &d.request_id)
            .field("session_id", &d.session_id)
            .field("token_id", &d.token_id)
            .field("verified_by", &d.verified_by)
            .finish()
    }
}

impl Serialize for Principal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = &self.0.data;
        let mut st = s.serialize_struct("Principal", 13)?;
        st.serialize_field("client_id", &d.client_id)?;
        st.serialize_field("granted_resource", &d.granted_resource)?;
        st.serialize_field("scopes", &d.scopes)?;
        st.serialize_field("permissions", &d.permissions)?;
        st.serialize_field("expires_at", &crate::timefmt::rfc3339(d.expires_at))?;
        st.serialize_field("oauth_resource", &d.oauth_resource.as_deref())?;
        st.serialize_field("issuer", &d.issuer.as_deref())?;
        st.serialize_field("deployment_id", &d.deployment_id)?;
        st.serialize_field("owner_user_id", &d.owner_user_id)?;
        st.serialize_field("request_id", &d.request_id)?;
        st.serialize_field("session_id", &d.session_id.as_deref())?;
        st.serialize_field("token_id", &d.token_id.as_deref())?;
        st.serialize_field("verified_by", d.verified_by.as_str())?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_key_names_the_caller_not_the_token() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(2_000_000_000);
        let grant = |client: &str, user: Option<i64>, issuer: Option<&str>, deployment: Option<i64>| {
            let mut g = Grant::new(client, at);
            g.owner_user_id = user.map(UserId);
            g.issuer = issuer.map(Into::into);
            g.deployment_id = deployment.map(DeploymentId);
            g
        };
        let key = |g: Grant| Principal::from_grant(g).binding_key();
        let base = key(grant("oc_a", Some(7), Some("https://a.example"), Some(1)));
        assert_eq!(base.len(), 64);
        assert!(base.bytes().all(|b| b.is_ascii_hexdigit()));
        // Another token of the same caller (other scopes, expiry, session): the same key.
        let mut again = grant("oc_a", Some(7), Some("https://a.example"), Some(1));
        again.scopes = StringSet::new(["projects:write"]);
        again.expires_at = at + std::time::Duration::from_secs(60);
        again.session_id = Some("sess_2".into());
        assert_eq!(key(again), base);
        // Any other client, user, issuer or deployment: another key.
        for other in [
            grant("oc_b", Some(7), Some("https://a.example"), Some(1)),
            grant("oc_a", Some(8), Some("https://a.example"), Some(1)),
            grant("oc_a", None, Some("https://a.example"), Some(1)),
            grant("oc_a", Some(7), Some("https://b.example"), Some(1)),
            grant("oc_a", Some(7), None, Some(1)),
            grant("oc_a", Some(7), Some("https://a.example"), Some(2)),
            grant("oc_a", Some(7), Some("https://a.example"), None),
            // Fields cannot run into each other.
            grant("a.exampleoc_a", Some(7), Some("https://"), Some(1)),
        ] {
            assert_ne!(key(other), base);
        }
        // An absent id is not the id 0.
        assert_ne!(
            key(grant("oc_a", None, None, None)),
            key(grant("oc_a", Some(0), None, Some(0)))
        );
    }

    #[test]
    fn parses_the_three_wacht_urn_forms() {
        assert_eq!(ResourceUrn::parse("urn:wacht:user:42"), ResourceUrn::User(UserId(42)));
        assert_eq!(
            ResourceUrn::parse("urn:wacht:organization:427001234567890561"),
            ResourceUrn::Organization(OrganizationId(427001234567890561))
        );
        assert_eq!(
            ResourceUrn::parse("urn:wacht:workspace:7"),
            ResourceUrn::Workspace(WorkspaceId(7))
        );
    }

    #[test]
    fn keeps_unknown_forms_raw_and_round_trips() {
        for raw in [
            "urn:wacht:team:1",
            "urn:wacht:user:",
            "urn:wacht:user:12a",
            "urn:wacht:user:-1",
            "urn:wacht:user:1:extra",
            "urn:wacht:user:99999999999999999999",
            "urn:wacht:user:00",
            "urn:wacht:organization:0427001234567890561",
            "https://example.com",
            "",
        ] {
            let urn = ResourceUrn::parse(raw);
            assert_eq!(urn, ResourceUrn::Other(raw.into()), "{raw}");
            assert_eq!(urn.to_string(), raw);
        }
        assert_eq!(
            ResourceUrn::parse("urn:wacht:workspace:7").to_string(),
            "urn:wacht:workspace:7"
        );
    }

    #[test]
    fn request_ids_round_trip() {
        for id in [
            "req_593812470012345678",
            "req_unknown",
            "req_0",
            "req_007",
            "",
            "req_99999999999999999999",
        ] {
            assert_eq!(RequestId::new(id).to_string(), id);
        }
    }

    #[test]
    fn string_set_is_exact_and_sorted() {
        let set = StringSet::new(["b", "a", "b", "A"]);
        assert_eq!(set.iter().collect::<Vec<_>>(), ["A", "a", "b"]);
        assert!(set.contains("a") && set.contains("A") && !set.contains("c") && !set.contains("a "));
    }
}
