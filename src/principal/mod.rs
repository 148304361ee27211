//! The verified caller: [`Principal`], its typed ids and the granted [`ResourceUrn`].

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::reject::ChallengeParams;
use crate::scopes::ScopeHierarchy;

mod values;

pub use self::values::{
    ApiKeyId, ClientId, CredentialKind, DeploymentId, MembershipId, OrganizationId, RateLimitState, RequestId,
    ResourceUrn, StringSet, UserId, VerifiedBy, WorkspaceId,
};

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
    /// What the gateway said about an API key; `None` for an OAuth access token.
    pub api_key: Option<Arc<ApiKeyIdentity>>,
    /// The gateway answer's `rate_limits[]`: the app's rules that matched the request it was
    /// asked about. The layer moves them into its meters (see
    /// [`rate_limit`](crate::rate_limit)): a cached principal's list is empty.
    pub rate_limits: Vec<RateLimitState>,
}

/// What the gateway says about an API key (`gateway-protocol.md` §4): which key, whose, and
/// its own metadata. For an API key, the [`Grant`]'s `client_id` is the key's API-auth app
/// (`app_slug`), its `granted_resource` the key's workspace (else its organization), and its
/// `owner_user_id` the key's owner.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ApiKeyIdentity {
    /// The key's id (`identity.key_id`).
    pub key_id: ApiKeyId,
    /// The key's name (`identity.key_name`).
    pub key_name: Arc<str>,
    /// The API-auth app the key belongs to (`identity.app_slug`).
    pub app_slug: Arc<str>,
    /// The organization the key acts for (`identity.organization_id`).
    pub organization_id: Option<OrganizationId>,
    /// The workspace the key acts for (`identity.workspace_id`).
    pub workspace_id: Option<WorkspaceId>,
    /// `identity.organization_membership_id`.
    pub organization_membership_id: Option<MembershipId>,
    /// `identity.workspace_membership_id`.
    pub workspace_membership_id: Option<MembershipId>,
    /// The key's own metadata object, verbatim (`{}` when it has none).
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl ApiKeyIdentity {
    /// A key with this id, name and app, and nothing else known; fill in the public fields.
    pub fn new(key_id: ApiKeyId, key_name: impl Into<Arc<str>>, app_slug: impl Into<Arc<str>>) -> Self {
        ApiKeyIdentity {
            key_id,
            key_name: key_name.into(),
            app_slug: app_slug.into(),
            organization_id: None,
            workspace_id: None,
            organization_membership_id: None,
            workspace_membership_id: None,
            metadata: serde_json::Map::new(),
        }
    }

    /// The tenant the key acts for: its workspace, else its organization.
    pub fn tenant(&self) -> Option<ResourceUrn> {
        match (self.workspace_id, self.organization_id) {
            (Some(w), _) => Some(ResourceUrn::Workspace(w)),
            (None, Some(o)) => Some(ResourceUrn::Organization(o)),
            (None, None) => None,
        }
    }
}

impl Serialize for ApiKeyIdentity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("ApiKeyIdentity", 8)?;
        st.serialize_field("key_id", &self.key_id)?;
        st.serialize_field("key_name", &*self.key_name)?;
        st.serialize_field("app_slug", &*self.app_slug)?;
        st.serialize_field("organization_id", &self.organization_id)?;
        st.serialize_field("workspace_id", &self.workspace_id)?;
        st.serialize_field("organization_membership_id", &self.organization_membership_id)?;
        st.serialize_field("workspace_membership_id", &self.workspace_membership_id)?;
        st.serialize_field("metadata", &self.metadata)?;
        st.end()
    }
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
            api_key: None,
            rate_limits: Vec::new(),
        }
    }

    /// Which credential this grant is for.
    pub fn credential_kind(&self) -> CredentialKind {
        if self.api_key.is_some() {
            CredentialKind::ApiKey
        } else if self.verified_by == VerifiedBy::JwtSignature {
            CredentialKind::JwtAccessToken
        } else {
            CredentialKind::OAuthAccessToken
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

    /// The same principal in an allocation of its own (its fields' shared parts still
    /// shared). A thread's front cache keeps one, so that the reference count its hits write
    /// is that thread's alone: hits of one token on many cores would otherwise all write one
    /// cache line.
    pub(crate) fn unshared_copy(&self) -> Self {
        Principal(Arc::new(Inner {
            data: self.0.data.clone(),
            challenge: Arc::clone(&self.0.challenge),
            hierarchy: Arc::clone(&self.0.hierarchy),
        }))
    }

    /// Builds a principal from a grant directly, for handler unit tests. Inside a server,
    /// principals come from [`WachtAuthLayer`](crate::WachtAuthLayer).
    pub fn from_grant(grant: Grant) -> Self {
        Principal::new(grant, ChallengeParams::shared_default(), Arc::default())
    }

    /// The OAuth client id (`identity.key_name`, `x-wacht-oauth-client-id`); for an API key,
    /// its API-auth app (`identity.app_slug`).
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

    /// Which credential the caller presented: an OAuth access token (opaque or JWT) or an
    /// API key.
    pub fn credential_kind(&self) -> CredentialKind {
        self.0.data.credential_kind()
    }

    /// What the gateway said about the API key, when the caller presented one: its id and
    /// name, app, organization / workspace and membership ids, and metadata.
    pub fn api_key(&self) -> Option<&ApiKeyIdentity> {
        self.0.data.api_key.as_deref()
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
            .field("credential_kind", &d.credential_kind())
            .field("api_key", &d.api_key)
            .finish()
    }
}

impl Serialize for Principal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = &self.0.data;
        let mut st = s.serialize_struct("Principal", 15)?;
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
        st.serialize_field("credential_kind", d.credential_kind().as_str())?;
        st.serialize_field("api_key", &d.api_key.as_deref())?;
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
