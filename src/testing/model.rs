//! Public data types configuring and observing a [`FakeGateway`](super::FakeGateway).

use std::time::{Duration, SystemTime};

/// Example deployment id used by the gateway protocol reference.
pub const EXAMPLE_DEPLOYMENT_ID: i64 = 418_223_109_876_543_489;
/// Example end-user (token owner) id used by the gateway protocol reference.
pub const EXAMPLE_OWNER_USER_ID: i64 = 432_119_876_543_210_241;
/// Example internal OAuth client id used by the gateway protocol reference.
pub const EXAMPLE_CLIENT_KEY_ID: i64 = 445_566_778_899_001_122;
/// Example issuer used by the gateway protocol reference.
pub const EXAMPLE_ISSUER: &str = "https://auth.example.com";

/// What the gateway knows about one OAuth access token: the rows its look-up joins
/// (access token, OAuth client, OAuth app, API-auth app) flattened into one value.
///
/// Build one with [`TokenGrant::new`] and the chaining setters, then hand it to
/// [`FakeGateway::register`](super::FakeGateway::register).
#[derive(Clone, Debug)]
pub struct TokenGrant {
    /// Public OAuth client id (`oc_…`); answered as `identity.key_name` and in the
    /// `x-wacht-oauth-client-id` header entry.
    pub client_id: String,
    /// Internal numeric id of the OAuth client; answered as `identity.key_id`.
    pub client_key_id: i64,
    /// Deployment the token belongs to; answered as `identity.deployment_id`.
    pub deployment_id: i64,
    /// End user who granted the token; answered as `identity.owner_user_id` and used for the
    /// app slug `oauth_<owner_user_id>`.
    pub owner_user_id: i64,
    /// Issuer, answered verbatim in the `x-wacht-oauth-issuer` header entry (the real
    /// gateway answers `https://` plus the OAuth app's host).
    pub issuer: String,
    /// Granted scopes, in stored order.
    pub scopes: Vec<String>,
    /// Canonical resource URN chosen at consent (`urn:wacht:organization:<id>`,
    /// `urn:wacht:workspace:<id>` or `urn:wacht:user:<id>`), if any.
    pub granted_resource: Option<String>,
    /// RFC 8707 `resource` requested at authorization (an absolute URL), if any.
    pub oauth_resource: Option<String>,
    /// Expiry; the token is inactive from this instant on.
    pub expires_at: SystemTime,
}

impl TokenGrant {
    /// A grant for `client_id` with the protocol reference's example ids
    /// (client key id 445566778899001122, deployment 418223109876543489, owner
    /// 432119876543210241, issuer `https://auth.example.com`), no scopes, no granted or
    /// OAuth resource, expiring one hour from now.
    #[must_use]
    pub fn new(client_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            client_key_id: EXAMPLE_CLIENT_KEY_ID,
            deployment_id: EXAMPLE_DEPLOYMENT_ID,
            owner_user_id: EXAMPLE_OWNER_USER_ID,
            issuer: EXAMPLE_ISSUER.to_owned(),
            scopes: Vec::new(),
            granted_resource: None,
            oauth_resource: None,
            expires_at: SystemTime::now() + Duration::from_secs(3600),
        }
    }

    /// Replaces the granted scopes.
    #[must_use]
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the canonical granted resource URN.
    #[must_use]
    pub fn granted_resource(mut self, urn: impl Into<String>) -> Self {
        self.granted_resource = Some(urn.into());
        self
    }

    /// Sets the RFC 8707 resource URL requested at authorization.
    #[must_use]
    pub fn oauth_resource(mut self, resource: impl Into<String>) -> Self {
        self.oauth_resource = Some(resource.into());
        self
    }

    /// Sets the deployment id.
    #[must_use]
    pub fn deployment_id(mut self, id: i64) -> Self {
        self.deployment_id = id;
        self
    }

    /// Sets the owning end user's id.
    #[must_use]
    pub fn owner_user_id(mut self, id: i64) -> Self {
        self.owner_user_id = id;
        self
    }

    /// Sets the OAuth client's internal numeric id.
    #[must_use]
    pub fn client_key_id(mut self, id: i64) -> Self {
        self.client_key_id = id;
        self
    }

    /// Sets the issuer URL.
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// Sets the absolute expiry.
    #[must_use]
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = at;
        self
    }

    /// Sets the expiry relative to now.
    #[must_use]
    pub fn expires_in(mut self, ttl: Duration) -> Self {
        self.expires_at = SystemTime::now() + ttl;
        self
    }
}

/// Example API-key id.
pub const EXAMPLE_API_KEY_ID: i64 = 451_002_003_004_005_006;

/// What the gateway knows about one API key: the key row, its API-auth app, and the
/// permissions of its organization / workspace roles, flattened into one value.
///
/// Build one with [`ApiKeyGrant::new`] and the chaining setters, then hand it to
/// [`FakeGateway::register_api_key`](super::FakeGateway::register_api_key).
#[derive(Clone, Debug)]
pub struct ApiKeyGrant {
    /// The key's id; answered as `identity.key_id`.
    pub key_id: i64,
    /// The key's name; answered as `identity.key_name`.
    pub key_name: String,
    /// The API-auth app's slug; answered as `identity.app_slug`.
    pub app_slug: String,
    /// Deployment; answered as `identity.deployment_id`.
    pub deployment_id: i64,
    /// The key's owner, if any; answered as `identity.owner_user_id`.
    pub owner_user_id: Option<i64>,
    /// The organization the key acts for, if any.
    pub organization_id: Option<i64>,
    /// The workspace the key acts for, if any.
    pub workspace_id: Option<i64>,
    /// `identity.organization_membership_id`.
    pub organization_membership_id: Option<i64>,
    /// `identity.workspace_membership_id`.
    pub workspace_membership_id: Option<i64>,
    /// The key's own permissions.
    pub permissions: Vec<String>,
    /// The permissions of its organization role.
    pub org_role_permissions: Vec<String>,
    /// The permissions of its workspace role.
    pub workspace_role_permissions: Vec<String>,
    /// The key's own metadata object, answered verbatim as `metadata`.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Expiry, if any (checked on every call, like the gateway does).
    pub expires_at: Option<SystemTime>,
}

impl ApiKeyGrant {
    /// A key of `app_slug` with the example key id, the example deployment, no owner,
    /// tenant, permissions or metadata, and no expiry.
    #[must_use]
    pub fn new(app_slug: impl Into<String>) -> Self {
        ApiKeyGrant {
            key_id: EXAMPLE_API_KEY_ID,
            key_name: "example key".to_owned(),
            app_slug: app_slug.into(),
            deployment_id: EXAMPLE_DEPLOYMENT_ID,
            owner_user_id: None,
            organization_id: None,
            workspace_id: None,
            organization_membership_id: None,
            workspace_membership_id: None,
            permissions: Vec::new(),
            org_role_permissions: Vec::new(),
            workspace_role_permissions: Vec::new(),
            metadata: serde_json::Map::new(),
            expires_at: None,
        }
    }

    /// Sets the key id.
    #[must_use]
    pub fn key_id(mut self, id: i64) -> Self {
        self.key_id = id;
        self
    }

    /// Sets the key's name.
    #[must_use]
    pub fn key_name(mut self, name: impl Into<String>) -> Self {
        self.key_name = name.into();
        self
    }

    /// Sets the deployment.
    #[must_use]
    pub fn deployment_id(mut self, id: i64) -> Self {
        self.deployment_id = id;
        self
    }

    /// Sets the owner.
    #[must_use]
    pub fn owner_user_id(mut self, id: i64) -> Self {
        self.owner_user_id = Some(id);
        self
    }

    /// The key acts for this organization, as this membership.
    #[must_use]
    pub fn organization(mut self, organization_id: i64, membership_id: i64) -> Self {
        self.organization_id = Some(organization_id);
        self.organization_membership_id = Some(membership_id);
        self
    }

    /// The key acts for this workspace, as this membership.
    #[must_use]
    pub fn workspace(mut self, workspace_id: i64, membership_id: i64) -> Self {
        self.workspace_id = Some(workspace_id);
        self.workspace_membership_id = Some(membership_id);
        self
    }

    /// Sets the key's own permissions.
    #[must_use]
    pub fn permissions<I, S>(mut self, permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.permissions = permissions.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the permissions its organization role gives.
    #[must_use]
    pub fn org_role_permissions<I, S>(mut self, permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.org_role_permissions = permissions.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the permissions its workspace role gives.
    #[must_use]
    pub fn workspace_role_permissions<I, S>(mut self, permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.workspace_role_permissions = permissions.into_iter().map(Into::into).collect();
        self
    }

    /// Sets one metadata entry.
    #[must_use]
    pub fn metadata(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.metadata.insert(key.into(), value);
        self
    }

    /// Sets the expiry.
    #[must_use]
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// The sorted union of its own and its roles' permissions (what the gateway answers).
    pub(crate) fn effective_permissions(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .permissions
            .iter()
            .chain(&self.org_role_permissions)
            .chain(&self.workspace_role_permissions)
            .cloned()
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

/// One entry of the OAuth app's `scope_definitions` (the same type local JWT verification
/// is configured with).
pub use crate::jwt::ScopeDefinition;

/// A `POST /v1/authz/check` request whose body matched the gateway's schema, as received.
///
/// String fields hold the values exactly as sent (not trimmed or normalised); the credential
/// itself is never kept, only its hash.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// `principal.type`: `oauth_access_token` or `api_key`.
    pub principal_type: String,
    /// Lower-case hex SHA-256 of the trimmed `principal.value` (see
    /// [`hash_token`](super::hash_token)).
    pub token_sha256: String,
    /// `method` as sent.
    pub method: String,
    /// `resource` as sent.
    pub resource: String,
    /// `client_ip` as sent (`None` when absent or `null`).
    pub client_ip: Option<String>,
    /// `user_agent` as sent (`None` when absent or `null`).
    pub user_agent: Option<String>,
    /// `required_permissions` as sent (`None` when absent or `null`).
    pub required_permissions: Option<Vec<String>>,
    /// The `Authorization` HTTP header of the call (the caller's backend API key), if any
    /// and if it was valid UTF-8.
    pub authorization: Option<String>,
    /// The `Content-Type` HTTP header of the call, if any and if it was valid UTF-8.
    pub content_type: Option<String>,
    /// All HTTP headers of the call.
    pub headers: http::HeaderMap,
}

/// A failure injected into every `POST /v1/authz/check` answer while it is set with
/// [`FakeGateway::set_fault`](super::FakeGateway::set_fault).
///
/// Faults apply after the call has been counted and (if its body matched the schema)
/// recorded, and before normal processing.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub enum Fault {
    /// Wait, then answer normally.
    Latency(Duration),
    /// Answer this status with the JSON error envelope (a 1xx or invalid code becomes 500).
    Status(u16),
    /// Answer this status with a `text/plain; charset=utf-8` body (a 1xx or invalid code
    /// becomes 500).
    StatusPlain(u16, String),
    /// `200`, `application/json`, body that is not JSON.
    GarbageBody,
    /// `200`, `application/json`, the first half of a valid decision body, with a
    /// `Content-Length` matching what is sent.
    TruncatedBody,
    /// `200`, `application/json`, a body of exactly this many bytes (a JSON string padded
    /// with `x`, so syntactically valid JSON from 2 bytes on, but not a decision).
    HugeBody(usize),
    /// `200` with the `Content-Length` of a full decision body; send half of it, then close
    /// the connection.
    HalfBodyThenClose,
    /// Read the request, wait, then answer normally (same as [`Fault::Latency`] from the
    /// client's point of view).
    SlowHeaders(Duration),
    /// Send the status line and headers of the normal answer at once, and its body only
    /// after this delay.
    SlowBody(Duration),
    /// `200` with a valid decision body but `Content-Type: text/html`.
    WrongContentType,
    /// `200` with `allowed: true` but `identity: null` (other fields as in the error
    /// envelope).
    AllowedWithoutIdentity,
    /// Read the request, then close the TCP connection without any response.
    DropConnection,
    /// Never answer (until the gateway shuts down).
    Hang,
    /// Checks of active known tokens (and API keys) whose permission check passes answer the
    /// `200` `rate_limited` decision with this `retry_after` (and `x-ratelimit-*` header
    /// entries whose `-reset` is this value) as if every rule applying to the resource (the
    /// default rule when none applies) blocked them, with `remaining` 0; nothing is counted.
    /// Other requests are answered normally.
    RateLimited {
        /// Value of `retry_after` (milliseconds).
        retry_after_ms: u64,
    },
}

/// Client id of the placeholder token behind the synthetic decision body that faults needing
/// a valid decision use when the request itself does not produce a `200` decision.
pub(crate) const SYNTHETIC_CLIENT_ID: &str = "oc_fakegatewaysyntheticclient000000";
