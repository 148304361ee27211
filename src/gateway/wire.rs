//! JSON shapes of `POST /v1/authz/check` (`gateway-protocol.md` §2-3) and the decoder that turns
//! a response into a [`Decision`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Decision, GatewayError};
use crate::principal::{
    ApiKeyId, ApiKeyIdentity, CredentialKind, DeploymentId, Grant, MembershipId, OrganizationId, RateLimitState,
    RequestId, ResourceUrn, StringSet, UserId, WorkspaceId,
};
use crate::timefmt::parse_rfc3339;

/// Request body. Only the fields the gateway knows: it rejects unknown keys with 422.
#[derive(Serialize)]
pub(crate) struct CheckBody<'a> {
    pub principal: PrincipalBody<'a>,
    pub resource: &'a str,
    pub method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<&'a str>,
}

#[derive(Serialize)]
pub(crate) struct PrincipalBody<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub value: &'a str,
}

/// How long an API key's decision stands at most: the gateway does not say when a key
/// expires (it checks that on every call), so a key's grant ends this long after the check,
/// and the cache's `ttl` (shorter) bounds how long it is used.
pub(crate) const API_KEY_DECISION_LIFETIME: Duration = Duration::from_secs(3600);

/// The 200 decision body (and the error envelope, which has the same shape), with the
/// metadata of an OAuth decision ([`Metadata`]) or of an API key (its own object, verbatim).
/// Unknown fields are ignored; everything the decoder does not need is left out.
#[derive(Deserialize)]
#[serde(bound = "M: DeserializeOwned")]
struct DecisionBody<M> {
    #[serde(default)]
    request_id: Option<String>,
    allowed: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    blocked_rule: Option<String>,
    #[serde(default)]
    identity: Option<Identity>,
    #[serde(default)]
    permissions: Option<Vec<String>>,
    #[serde(default)]
    metadata: Option<M>,
    #[serde(default)]
    retry_after: Option<u64>,
    #[serde(default)]
    headers: Option<WachtHeaders>,
    #[serde(default)]
    rate_limits: Option<Vec<RateLimitEntry>>,
}

/// One `rate_limits[]` entry (`gateway-protocol.md` §3.3), read leniently: an entry of
/// another shape is skipped (not metered) rather than failing the whole answer.
#[derive(Deserialize)]
struct RateLimitEntry {
    #[serde(default)]
    rule: Option<serde_json::Value>,
    #[serde(default)]
    limit: Option<serde_json::Value>,
    #[serde(default)]
    remaining: Option<serde_json::Value>,
}

/// The answer's rate limits, the entries of the documented shape.
fn rate_limits(entries: Option<Vec<RateLimitEntry>>) -> Vec<RateLimitState> {
    entries
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| {
            let rule = e.rule?.as_str()?.to_owned();
            Some(RateLimitState::new(rule, e.limit?.as_u64()?, e.remaining?.as_u64()?))
        })
        .collect()
}

/// The entries of the decision's `headers` map that the decoder reads (keys are lower-case,
/// §3.3); the others are skipped without being stored.
#[derive(Deserialize, Default)]
struct WachtHeaders {
    #[serde(default, rename = "x-wacht-oauth-client-id")]
    client_id: Option<String>,
    #[serde(default, rename = "x-wacht-oauth-issuer")]
    issuer: Option<String>,
    #[serde(default, rename = "x-wacht-granted-resource")]
    granted_resource: Option<String>,
}

#[derive(Deserialize)]
struct Identity {
    deployment_id: Option<String>,
    key_name: Option<String>,
    #[serde(default)]
    owner_user_id: Option<String>,
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    app_slug: Option<String>,
    #[serde(default)]
    organization_id: Option<String>,
    #[serde(default)]
    workspace_id: Option<String>,
    #[serde(default)]
    organization_membership_id: Option<String>,
    #[serde(default)]
    workspace_membership_id: Option<String>,
}

/// An optional decimal id of the identity: absent is `None`, anything but an integer an error.
fn id<T>(value: Option<&str>, field: &str, make: impl Fn(i64) -> T) -> Result<Option<T>, GatewayError> {
    match value {
        None => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .map(|v| Some(make(v)))
            .map_err(|_| GatewayError::Decode(format!("identity.{field} is not an integer"))),
    }
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    principal_type: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    oauth_resource: Option<String>,
    #[serde(default)]
    granted_resource: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

/// Decodes a 200 response body into a decision about a credential of this kind.
///
/// Never yields [`Decision::Allowed`] unless the body says `"allowed": true` and carries an
/// identity with a deployment id and client id (for an API key: key id, name and app), and
/// for an OAuth token metadata with a parseable `expires_at`.
pub(crate) fn decode_decision(body: &[u8], kind: CredentialKind) -> Result<Decision, GatewayError> {
    match kind {
        CredentialKind::ApiKey => decode_api_key(body),
        _ => decode_oauth(body),
    }
}

/// The refusal of an `allowed: false` body, or `None` for an allowed one.
fn refusal<M>(body: &mut DecisionBody<M>) -> Option<Result<Decision, GatewayError>> {
    if body.allowed {
        return None;
    }
    Some(match body.reason.as_deref() {
        Some("rate_limited") => Ok(Decision::RateLimited {
            // `retry_after` is in milliseconds.
            retry_after: body.retry_after.map(Duration::from_millis),
            blocked_rule: body.blocked_rule.take().filter(|r| !r.is_empty()).map(Arc::from),
            rate_limits: rate_limits(body.rate_limits.take()),
        }),
        Some("permission_denied") => Ok(Decision::PermissionDenied),
        _ => Err(GatewayError::Decode(
            "200 decision with allowed=false and an unknown reason".into(),
        )),
    })
}

fn decode_oauth(body: &[u8]) -> Result<Decision, GatewayError> {
    let mut body: DecisionBody<Metadata> =
        serde_json::from_slice(body).map_err(|e| GatewayError::Decode(e.to_string()))?;
    if let Some(refused) = refusal(&mut body) {
        return refused;
    }
    let identity = body
        .identity
        .ok_or_else(|| GatewayError::Decode("allowed decision without identity".into()))?;
    let metadata = body
        .metadata
        .ok_or_else(|| GatewayError::Decode("allowed decision without metadata".into()))?;
    if metadata
        .principal_type
        .as_deref()
        .is_some_and(|t| t != "oauth_access_token")
    {
        return Err(GatewayError::Decode("decision is not for an OAuth access token".into()));
    }
    let deployment_id = deployment(&identity)?;
    let owner_user_id = id(identity.owner_user_id.as_deref(), "owner_user_id", UserId)?;
    let headers = body.headers.unwrap_or_default();
    let client_id = identity
        .key_name
        .or(headers.client_id)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| GatewayError::Decode("allowed decision without a client id".into()))?;
    let expires_at = metadata
        .expires_at
        .as_deref()
        .and_then(parse_rfc3339)
        .ok_or_else(|| GatewayError::Decode("metadata.expires_at missing or not RFC 3339".into()))?;
    let granted_resource = metadata
        .granted_resource
        .or(headers.granted_resource)
        .map(|s| ResourceUrn::parse(&s));
    let mut grant = Grant::new(client_id, expires_at);
    grant.granted_resource = granted_resource;
    grant.scopes = StringSet::new(metadata.scopes.unwrap_or_default());
    grant.permissions = StringSet::new(body.permissions.unwrap_or_default());
    grant.oauth_resource = metadata.oauth_resource.map(Into::into);
    grant.issuer = headers.issuer.map(Into::into);
    grant.deployment_id = Some(deployment_id);
    grant.owner_user_id = owner_user_id;
    grant.request_id = Some(RequestId::new(body.request_id.as_deref().unwrap_or_default()));
    grant.rate_limits = rate_limits(body.rate_limits);
    Ok(Decision::Allowed(Box::new(grant)))
}

/// An API key's decision (`gateway-protocol.md` §4): the key's identity; its metadata is its
/// own object (no `principal_type`, no expiry: the gateway checks that on every call).
fn decode_api_key(body: &[u8]) -> Result<Decision, GatewayError> {
    let mut body: DecisionBody<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(body).map_err(|e| GatewayError::Decode(e.to_string()))?;
    if let Some(refused) = refusal(&mut body) {
        return refused;
    }
    let identity = body
        .identity
        .ok_or_else(|| GatewayError::Decode("allowed decision without identity".into()))?;
    let metadata = body.metadata.unwrap_or_default();
    if metadata.get("principal_type").and_then(|t| t.as_str()) == Some("oauth_access_token") {
        return Err(GatewayError::Decode(
            "decision is for an OAuth token, not an API key".into(),
        ));
    }
    let deployment_id = deployment(&identity)?;
    let key_id = id(identity.key_id.as_deref(), "key_id", ApiKeyId)?
        .ok_or_else(|| GatewayError::Decode("API key decision without identity.key_id".into()))?;
    let present = |v: Option<String>, field: &str| {
        v.filter(|s| !s.is_empty())
            .ok_or_else(|| GatewayError::Decode(format!("API key decision without identity.{field}")))
    };
    let key_name = present(identity.key_name, "key_name")?;
    let app_slug: Arc<str> = present(identity.app_slug, "app_slug")?.into();
    let mut key = ApiKeyIdentity::new(key_id, key_name, Arc::clone(&app_slug));
    key.organization_id = id(identity.organization_id.as_deref(), "organization_id", OrganizationId)?;
    key.workspace_id = id(identity.workspace_id.as_deref(), "workspace_id", WorkspaceId)?;
    key.organization_membership_id = id(
        identity.organization_membership_id.as_deref(),
        "organization_membership_id",
        MembershipId,
    )?;
    key.workspace_membership_id = id(
        identity.workspace_membership_id.as_deref(),
        "workspace_membership_id",
        MembershipId,
    )?;
    key.metadata = metadata;
    let mut grant = Grant::new(app_slug, SystemTime::now() + API_KEY_DECISION_LIFETIME);
    grant.granted_resource = key.tenant();
    grant.permissions = StringSet::new(body.permissions.unwrap_or_default());
    grant.deployment_id = Some(deployment_id);
    grant.owner_user_id = id(identity.owner_user_id.as_deref(), "owner_user_id", UserId)?;
    grant.request_id = Some(RequestId::new(body.request_id.as_deref().unwrap_or_default()));
    grant.api_key = Some(Arc::new(key));
    grant.rate_limits = rate_limits(body.rate_limits);
    Ok(Decision::Allowed(Box::new(grant)))
}

fn deployment(identity: &Identity) -> Result<DeploymentId, GatewayError> {
    identity
        .deployment_id
        .as_deref()
        .and_then(|s| s.parse().ok())
        .map(DeploymentId)
        .ok_or_else(|| GatewayError::Decode("identity.deployment_id missing or not an integer".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::OrganizationId;

    const ALLOWED: &str = r#"{
      "request_id": "req_593812470012345678", "allowed": true, "reason": null, "blocked_rule": null,
      "identity": { "key_id": "445566778899001122", "deployment_id": "418223109876543489", "app_slug": "oauth_432119876543210241",
        "key_name": "oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl", "owner_user_id": "432119876543210241", "organization_id": null,
        "workspace_id": null, "organization_membership_id": null, "workspace_membership_id": null },
      "permissions": ["org:projects:read", "org:projects:write", "projects:read", "projects:write"],
      "metadata": { "principal_type": "oauth_access_token", "scopes": ["projects:read", "projects:write"],
        "oauth_resource": "https://api.example.com", "granted_resource": "urn:wacht:organization:427001234567890561",
        "expires_at": "2026-06-29T14:05:11.482913Z" },
      "rate_limits": [{ "rule": "1000/60s", "remaining": 999, "limit": 1000 }], "retry_after": null,
      "headers": { "x-wacht-oauth-client-id": "oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl", "x-wacht-oauth-issuer": "https://auth.example.com" },
      "some_future_field": {"nested": true}
    }"#;

    #[test]
    fn a_rate_limit_entry_of_another_shape_is_skipped_not_fatal() {
        let body = ALLOWED.replace(
            r#""rate_limits": [{ "rule": "1000/60s", "remaining": 999, "limit": 1000 }]"#,
            r#""rate_limits": [{ "rule": 7, "remaining": -1 }, "x", { "rule": "5/1s", "remaining": 4, "limit": 5 }]"#,
        );
        let body = body.replace(r#", "x""#, "");
        let Ok(Decision::Allowed(grant)) = decode_decision(body.as_bytes(), CredentialKind::OAuthAccessToken) else {
            panic!("not allowed");
        };
        assert_eq!(grant.rate_limits, [RateLimitState::new("5/1s", 5, 4)]);
    }

    #[test]
    fn decodes_the_reference_allowed_decision() {
        let Ok(Decision::Allowed(grant)) = decode_decision(ALLOWED.as_bytes(), CredentialKind::OAuthAccessToken) else {
            panic!("not allowed");
        };
        assert_eq!(grant.client_id.as_str(), "oc_8QkFE6BI60eALThiZSopWVHTbadLSoLl");
        assert_eq!(grant.deployment_id, Some(DeploymentId(418223109876543489)));
        assert_eq!(grant.owner_user_id, Some(UserId(432119876543210241)));
        assert_eq!(
            grant.granted_resource,
            Some(ResourceUrn::Organization(OrganizationId(427001234567890561)))
        );
        assert_eq!(grant.issuer.as_deref(), Some("https://auth.example.com"));
        assert_eq!(grant.rate_limits, [RateLimitState::new("1000/60s", 1000, 999)]);
        assert_eq!(grant.oauth_resource.as_deref(), Some("https://api.example.com"));
        assert!(grant.permissions.contains("org:projects:write"));
        assert_eq!(grant.scopes.len(), 2);
        assert_eq!(
            grant.request_id.map(|r| r.to_string()).as_deref(),
            Some("req_593812470012345678")
        );
    }

    #[test]
    fn client_id_and_granted_resource_fall_back_to_the_headers_map() {
        let body = r#"{
          "allowed": true,
          "identity": {"deployment_id": "7"},
          "metadata": {"expires_at": "2026-06-29T14:05:11Z"},
          "headers": {"x-ratelimit-60s-limit": "1000", "x-wacht-oauth-client-id": "oc_fromHeaders",
            "x-wacht-granted-resource": "urn:wacht:workspace:12", "x-wacht-scopes": "a,b",
            "x-wacht-oauth-issuer": "https://auth.example.com"}
        }"#;
        let Ok(Decision::Allowed(grant)) = decode_decision(body.as_bytes(), CredentialKind::OAuthAccessToken) else {
            panic!("not allowed");
        };
        assert_eq!(grant.client_id.as_str(), "oc_fromHeaders");
        assert_eq!(
            grant.granted_resource.map(|r| r.to_string()).as_deref(),
            Some("urn:wacht:workspace:12")
        );
        assert_eq!(grant.issuer.as_deref(), Some("https://auth.example.com"));
        // Without a client id anywhere, nothing is allowed.
        let without = body.replace("x-wacht-oauth-client-id", "x-wacht-other");
        assert!(decode_decision(without.as_bytes(), CredentialKind::OAuthAccessToken).is_err());
        // A repeated entry the decoder reads is ambiguous: refused, like a repeated top-level key.
        let repeated = body.replace("\"x-wacht-scopes\"", "\"x-wacht-oauth-client-id\"");
        assert!(matches!(
            decode_decision(repeated.as_bytes(), CredentialKind::OAuthAccessToken),
            Err(GatewayError::Decode(_))
        ));
    }

    #[test]
    fn rate_limited_retry_after_is_milliseconds() {
        let body = r#"{"allowed": false, "reason": "rate_limited", "retry_after": 60000, "identity": null}"#;
        assert!(matches!(
            decode_decision(body.as_bytes(), CredentialKind::OAuthAccessToken),
            Ok(Decision::RateLimited { retry_after: Some(d), blocked_rule: None, .. }) if d == Duration::from_secs(60)
        ));
    }

    #[test]
    fn rate_limited_names_the_blocking_rule_and_its_budget() {
        let body = r#"{"allowed": false, "reason": "rate_limited", "blocked_rule": "5/1s", "retry_after": 1000,
            "rate_limits": [{ "rule": "1000/60s", "remaining": 3, "limit": 1000 }, { "rule": "5/1s", "remaining": 0, "limit": 5 }]}"#;
        let Ok(Decision::RateLimited {
            blocked_rule,
            rate_limits,
            ..
        }) = decode_decision(body.as_bytes(), CredentialKind::ApiKey)
        else {
            panic!("not a rate-limited decision");
        };
        assert_eq!(blocked_rule.as_deref(), Some("5/1s"));
        assert_eq!(
            rate_limits,
            [
                RateLimitState::new("1000/60s", 1000, 3),
                RateLimitState::new("5/1s", 5, 0)
            ]
        );
    }

    #[test]
    fn never_allows_without_allowed_true_and_identity() {
        for body in [
            r#"{"allowed": false, "identity": null}"#,
            r#"{"allowed": "true"}"#,
            r#"{"allowed": true, "identity": null, "metadata": {"expires_at": "2026-06-29T14:05:11Z"}}"#,
            r#"{"allowed": true, "identity": {"deployment_id": "1", "key_name": "oc_x"}, "metadata": {}}"#,
            r#"{"allowed": true, "identity": {"deployment_id": "x", "key_name": "oc_x"}, "metadata": {"expires_at": "2026-06-29T14:05:11Z"}}"#,
            r#"{"identity": {"deployment_id": "1", "key_name": "oc_x"}, "metadata": {"expires_at": "2026-06-29T14:05:11Z"}}"#,
            "not json",
            "",
        ] {
            assert!(
                !matches!(
                    decode_decision(body.as_bytes(), CredentialKind::OAuthAccessToken),
                    Ok(Decision::Allowed(_))
                ),
                "{body}"
            );
        }
    }
}
