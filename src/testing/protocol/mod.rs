//! Wire types and pure protocol rules of the gateway authz check.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

mod permissions;

pub(crate) use self::permissions::{effective_permissions, evaluate_permissions, permission_expression};
use super::model::{ApiKeyGrant, TokenGrant};

// ---------------------------------------------------------------------------------------
// Request schema (protocol section 2)
// ---------------------------------------------------------------------------------------

/// Body of `POST /v1/authz/check`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckRequest {
    pub(crate) principal: Principal,
    pub(crate) resource: String,
    pub(crate) method: String,
    #[serde(default)]
    pub(crate) client_ip: Option<String>,
    #[serde(default)]
    pub(crate) user_agent: Option<String>,
    #[serde(default)]
    pub(crate) required_permissions: Option<Vec<String>>,
}

/// `principal` object of the request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Principal {
    #[serde(rename = "type")]
    pub(crate) kind: PrincipalType,
    pub(crate) value: String,
}

/// `principal.type`, case-sensitive.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PrincipalType {
    ApiKey,
    OauthAccessToken,
}

impl PrincipalType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::OauthAccessToken => "oauth_access_token",
        }
    }
}

/// Methods the gateway accepts (after trimming and upper-casing).
const ALLOWED_METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// Trims and upper-cases `method`; `None` if it is not in the allow-list.
pub(crate) fn normalize_method(method: &str) -> Option<String> {
    let upper = method.trim().to_uppercase();
    ALLOWED_METHODS.contains(&upper.as_str()).then_some(upper)
}

/// Resource normalisation of section 2; `None` means `400`.
pub(crate) fn normalize_resource(resource: &str) -> Option<String> {
    let trimmed = resource.trim();
    if trimmed.is_empty() {
        return None;
    }
    let without_fragment = trimmed.split('#').next().unwrap_or_default();
    let without_query = without_fragment.split('?').next().unwrap_or_default();
    let path = without_query.trim();
    if path.is_empty() {
        return None;
    }
    if path.starts_with('/') {
        Some(path.to_owned())
    } else {
        Some(format!("/{path}"))
    }
}

/// API key format check (section 4 step 2): at least 46 bytes, the last 43 base64url.
pub(crate) fn api_key_format_ok(key: &str) -> bool {
    let bytes = key.as_bytes();
    bytes.len() >= 46
        && bytes[bytes.len() - 43..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

// ---------------------------------------------------------------------------------------
// Token activity and effective permissions (section 3.2 steps 5 and 6)
// ---------------------------------------------------------------------------------------

/// Resource kind of a granted resource URN, decided by prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ResourceKind {
    User,
    Organization,
    Workspace,
}

pub(super) fn resource_kind(urn: &str) -> Option<ResourceKind> {
    if urn.starts_with("urn:wacht:organization:") {
        Some(ResourceKind::Organization)
    } else if urn.starts_with("urn:wacht:workspace:") {
        Some(ResourceKind::Workspace)
    } else if urn.starts_with("urn:wacht:user:") {
        Some(ResourceKind::User)
    } else {
        None
    }
}

/// Condition 5 of the `active` flag. Organization and workspace memberships and role
/// permissions are not modelled: they are assumed to exist and to cover everything.
fn granted_resource_ok(grant: &TokenGrant) -> bool {
    let Some(urn) = grant.granted_resource.as_deref() else {
        return true;
    };
    let Some(kind) = resource_kind(urn) else {
        return false;
    };
    // Only the fourth colon-separated part is inspected.
    let id_part = urn.split(':').nth(3).unwrap_or_default();
    if id_part.is_empty() || !id_part.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(id) = id_part.parse::<i64>() else {
        return false;
    };
    match kind {
        ResourceKind::User => id == grant.owner_user_id,
        ResourceKind::Organization | ResourceKind::Workspace => true,
    }
}

/// The `active` flag (minus the parts that are not modelled: app activity, grant status,
/// memberships).
pub(crate) fn is_active(grant: &TokenGrant, revoked: bool, now: SystemTime) -> bool {
    !revoked && grant.expires_at > now && granted_resource_ok(grant)
}

// ---------------------------------------------------------------------------------------
// Response bodies (sections 3.3 and 3.4)
// ---------------------------------------------------------------------------------------

/// The decision body / error envelope; field order as on the wire.
#[derive(Debug, Serialize)]
pub(crate) struct Decision {
    pub(crate) request_id: String,
    pub(crate) allowed: bool,
    pub(crate) reason: Option<&'static str>,
    pub(crate) blocked_rule: Option<String>,
    pub(crate) identity: Option<Identity>,
    pub(crate) permissions: Vec<String>,
    pub(crate) metadata: Option<DecisionMetadata>,
    pub(crate) rate_limits: Vec<RateLimitEntry>,
    pub(crate) retry_after: Option<u64>,
    pub(crate) headers: BTreeMap<String, String>,
}

impl Decision {
    /// The error envelope of section 3.4.
    pub(crate) fn envelope(request_id: String) -> Self {
        Self {
            request_id,
            allowed: false,
            reason: None,
            blocked_rule: None,
            identity: None,
            permissions: Vec::new(),
            metadata: None,
            rate_limits: Vec::new(),
            retry_after: None,
            headers: BTreeMap::new(),
        }
    }

    pub(crate) fn to_bytes(&self) -> bytes::Bytes {
        // Serialising these plain structs cannot fail; fall back to an empty object anyway.
        serde_json::to_vec(self)
            .map(bytes::Bytes::from)
            .unwrap_or_else(|_| bytes::Bytes::from_static(b"{}"))
    }
}

/// `identity` for OAuth principals; ids as decimal strings.
#[derive(Debug, Serialize)]
pub(crate) struct Identity {
    key_id: String,
    deployment_id: String,
    app_slug: String,
    key_name: String,
    owner_user_id: Option<String>,
    organization_id: Option<String>,
    workspace_id: Option<String>,
    organization_membership_id: Option<String>,
    workspace_membership_id: Option<String>,
}

/// `metadata`: an OAuth token's [`Metadata`] (keys in wire order), or an API key's own object.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum DecisionMetadata {
    OAuth(Metadata),
    ApiKey(serde_json::Map<String, serde_json::Value>),
}

/// `metadata` for OAuth principals, keys in wire order.
#[derive(Debug, Serialize)]
pub(crate) struct Metadata {
    principal_type: &'static str,
    scopes: Vec<String>,
    oauth_resource: Option<String>,
    granted_resource: Option<String>,
    expires_at: String,
}

/// One `rate_limits` entry.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RateLimitEntry {
    pub(crate) rule: String,
    pub(crate) remaining: u64,
    pub(crate) limit: u64,
}

/// Outcome of evaluating one rate-limit rule.
#[derive(Clone, Debug)]
pub(crate) struct RateOutcome {
    /// Window label `W` (`60s`, `200ms`).
    pub(crate) window_label: String,
    pub(crate) entry: RateLimitEntry,
    /// `Some(retry after ms)` when the rule blocked.
    pub(crate) blocked: Option<u64>,
}

/// App slug of an OAuth principal.
pub(crate) fn app_slug(grant: &TokenGrant) -> String {
    format!("oauth_{}", grant.owner_user_id)
}

/// What the permission and rate-limit steps decided.
pub(crate) enum Verdict {
    PermissionDenied,
    /// One outcome per evaluated rule, in evaluation order (none: no rule applied).
    Rated(Vec<RateOutcome>),
}

/// Builds the 200 decision for an active OAuth token.
pub(crate) fn oauth_decision(
    request_id: String,
    grant: &TokenGrant,
    permissions: Vec<String>,
    verdict: Verdict,
) -> Decision {
    let slug = app_slug(grant);
    let mut headers = BTreeMap::new();
    put_header(&mut headers, "x-wacht-principal-type", "oauth_access_token");
    put_header(&mut headers, "x-wacht-deployment-id", &grant.deployment_id.to_string());
    put_header(&mut headers, "x-wacht-app-slug", &slug);
    put_header(&mut headers, "x-wacht-oauth-client-id", &grant.client_id);
    put_header(&mut headers, "x-wacht-oauth-issuer", &grant.issuer);
    if let Some(urn) = &grant.granted_resource {
        put_header(&mut headers, "x-wacht-granted-resource", urn);
        put_header(&mut headers, "x-wacht-oauth-audience", urn);
    }
    if let Some(resource) = &grant.oauth_resource {
        put_header(&mut headers, "x-wacht-oauth-resource", resource);
    }
    if !grant.scopes.is_empty() {
        put_header(&mut headers, "x-wacht-scopes", &grant.scopes.join(","));
    }
    if !permissions.is_empty() {
        let joined = permissions.join(",");
        // Omitted (not replaced) when it is not a valid header value.
        if http::HeaderValue::from_str(&joined).is_ok() {
            put_header(&mut headers, "x-wacht-permissions", &joined);
        }
    }

    let (allowed, reason, blocked_rule, rate_limits, retry_after) = apply_verdict(&mut headers, verdict);
    Decision {
        request_id,
        allowed,
        reason,
        blocked_rule,
        identity: Some(Identity {
            key_id: grant.client_key_id.to_string(),
            deployment_id: grant.deployment_id.to_string(),
            app_slug: slug,
            key_name: grant.client_id.clone(),
            owner_user_id: Some(grant.owner_user_id.to_string()),
            organization_id: None,
            workspace_id: None,
            organization_membership_id: None,
            workspace_membership_id: None,
        }),
        permissions,
        metadata: Some(DecisionMetadata::OAuth(Metadata {
            principal_type: "oauth_access_token",
            scopes: grant.scopes.clone(),
            oauth_resource: grant.oauth_resource.clone(),
            granted_resource: grant.granted_resource.clone(),
            expires_at: format_rfc3339_micros(grant.expires_at),
        })),
        rate_limits,
        retry_after,
        headers,
    }
}

/// What a verdict makes of a decision: `allowed`, `reason`, `blocked_rule`, `rate_limits`,
/// `retry_after`, and its header entries.
type VerdictFields = (
    bool,
    Option<&'static str>,
    Option<String>,
    Vec<RateLimitEntry>,
    Option<u64>,
);

fn apply_verdict(headers: &mut BTreeMap<String, String>, verdict: Verdict) -> VerdictFields {
    let headers = &mut *headers;
    match verdict {
        Verdict::PermissionDenied => {
            put_header(headers, "x-wacht-permission-denied", "true");
            (
                false,
                Some("permission_denied"),
                Some("permission_denied".to_owned()),
                Vec::new(),
                None,
            )
        }
        Verdict::Rated(outcomes) => {
            let mut blocked_rule = None;
            let mut retry_after: Option<u64> = None;
            let mut rate_limits = Vec::with_capacity(outcomes.len());
            for outcome in outcomes {
                let w = &outcome.window_label;
                put_header(
                    headers,
                    &format!("x-ratelimit-{w}-limit"),
                    &outcome.entry.limit.to_string(),
                );
                put_header(
                    headers,
                    &format!("x-ratelimit-{w}-remaining"),
                    &outcome.entry.remaining.to_string(),
                );
                if let Some(retry) = outcome.blocked {
                    put_header(headers, &format!("x-ratelimit-{w}-reset"), &retry.to_string());
                    blocked_rule.get_or_insert_with(|| outcome.entry.rule.clone());
                    retry_after = Some(retry_after.map_or(retry, |r| r.min(retry)));
                }
                rate_limits.push(outcome.entry);
            }
            match blocked_rule {
                Some(rule) => (false, Some("rate_limited"), Some(rule), rate_limits, retry_after),
                None => (true, None, None, rate_limits, None),
            }
        }
    }
}

/// Builds the 200 decision for an active API key (`gateway-protocol.md` §4).
pub(crate) fn api_key_decision(
    request_id: String,
    key: &ApiKeyGrant,
    permissions: Vec<String>,
    verdict: Verdict,
) -> Decision {
    let mut headers = BTreeMap::new();
    let id = |v: Option<i64>| v.map(|v| v.to_string());
    put_header(&mut headers, "x-wacht-key-id", &key.key_id.to_string());
    put_header(&mut headers, "x-wacht-deployment-id", &key.deployment_id.to_string());
    put_header(&mut headers, "x-wacht-app-slug", &key.app_slug);
    put_header(&mut headers, "x-wacht-key-name", &key.key_name);
    for (name, value) in [
        ("x-wacht-organization-id", id(key.organization_id)),
        ("x-wacht-workspace-id", id(key.workspace_id)),
        ("x-wacht-organization-membership-id", id(key.organization_membership_id)),
        ("x-wacht-workspace-membership-id", id(key.workspace_membership_id)),
    ] {
        if let Some(value) = value {
            put_header(&mut headers, name, &value);
        }
    }
    if !permissions.is_empty() {
        put_header(&mut headers, "x-wacht-permissions", &permissions.join(","));
    }
    let strings: Vec<String> = key
        .metadata
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
        .collect();
    if !strings.is_empty() {
        put_header(&mut headers, "x-wacht-metadata", &strings.join(","));
    }
    let (allowed, reason, blocked_rule, rate_limits, retry_after) = apply_verdict(&mut headers, verdict);
    Decision {
        request_id,
        allowed,
        reason,
        blocked_rule,
        identity: Some(Identity {
            key_id: key.key_id.to_string(),
            deployment_id: key.deployment_id.to_string(),
            app_slug: key.app_slug.clone(),
            key_name: key.key_name.clone(),
            owner_user_id: id(key.owner_user_id),
            organization_id: id(key.organization_id),
            workspace_id: id(key.workspace_id),
            organization_membership_id: id(key.organization_membership_id),
            workspace_membership_id: id(key.workspace_membership_id),
        }),
        permissions,
        metadata: Some(DecisionMetadata::ApiKey(key.metadata.clone())),
        rate_limits,
        retry_after,
        headers,
    }
}

/// Inserts a header entry the way the gateway's `HeaderMap` round trip does: a value that is
/// not a valid header value becomes `invalid`; a non-ASCII value is dropped.
fn put_header(map: &mut BTreeMap<String, String>, name: &str, value: &str) {
    let value = match http::HeaderValue::from_str(value) {
        Ok(v) => v,
        Err(_) => http::HeaderValue::from_static("invalid"),
    };
    match value.to_str() {
        Ok(text) => {
            map.insert(name.to_ascii_lowercase(), text.to_owned());
        }
        Err(_) => {
            map.remove(&name.to_ascii_lowercase());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rate-limit labels (section 3.2 step 9)
// ---------------------------------------------------------------------------------------

/// Window label `W`: `<n>ms` under one second, otherwise whole seconds.
pub(crate) fn window_label(window_ms: u64) -> String {
    if window_ms < 1000 {
        format!("{window_ms}ms")
    } else {
        format!("{}s", window_ms / 1000)
    }
}

// ---------------------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------------------

/// RFC 3339 in UTC with `Z`, truncated to microseconds (Postgres precision) and printed with
/// 0, 3, 6 or 9 fractional digits as needed (chrono's default serde format).
pub(crate) fn format_rfc3339_micros(at: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(at);
    let nanos = dt.nanosecond() / 1000 * 1000;
    let fraction = if nanos == 0 {
        String::new()
    } else if nanos % 1_000_000 == 0 {
        format!(".{:03}", nanos / 1_000_000)
    } else if nanos % 1000 == 0 {
        format!(".{:06}", nanos / 1000)
    } else {
        format!(".{nanos:09}")
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        fraction
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn perms(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn eval(required: &[&str], have: &[&str]) -> bool {
        let required = perms(required);
        match permission_expression(Some(&required)) {
            Some(expr) => evaluate_permissions(&expr, &perms(have)),
            None => true,
        }
    }

    #[test]
    fn simple_path_and_commas() {
        assert!(eval(&["a"], &["a"]));
        assert!(!eval(&["a"], &["A"]));
        assert!(eval(&["a,b"], &["a", "b"]));
        assert!(!eval(&["a,b"], &["a"]));
        assert!(eval(&[" a , b ,"], &["a", "b"]));
        assert!(eval(&["", "  "], &[]));
        assert!(eval(&[" a "], &["a"]));
    }

    #[test]
    fn operators_and_precedence() {
        assert!(eval(&["a", "b"], &["a", "b"]));
        assert!(!eval(&["a", "b"], &["a"]));
        assert!(eval(&["a OR b"], &["b"]));
        // ["a", "b OR c"] is "a AND b OR c" = (a AND b) OR c.
        assert!(eval(&["a", "b OR c"], &["c"]));
        assert!(!eval(&["a", "b OR c"], &["a"]));
        // Lower-case operators are not operators.
        assert!(!eval(&["a or b"], &["a"]));
        assert!(eval(&["a or b"], &["a or b"]));
        // Commas are literal on the operator path.
        assert!(!eval(&["a,b", "c"], &["a", "b", "c"]));
        assert!(eval(&["a,b", "c"], &["a,b", "c"]));
    }

    #[test]
    fn parenthesis_quirk() {
        assert!(eval(&["(a OR b)"], &["b"]));
        assert!(!eval(&["a AND (b OR c)"], &["a", "b", "c"]));
        assert!(eval(&["a AND (b OR c)"], &["a", "b", "true"]));
        assert!(!eval(&["a AND (b OR c)"], &["a", "true"]));
        assert!(eval(&["a AND (b OR c)"], &["a", "false"]));
        assert!(!eval(&["(a)"], &["a"]));
        assert!(eval(&["(a)"], &["(a)"]));
        assert!(!eval(&["(a) AND (b)"], &["a", "b"]));
        assert!(eval(&["((a OR b))"], &["b"]));
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let deep = format!("{}a OR b{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(!evaluate_permissions(&deep, &perms(&["a", "b"])));
        let many = "(a) AND ".repeat(100_000);
        assert!(!evaluate_permissions(&many, &perms(&["a"])));
    }

    #[test]
    fn resource_normalisation() {
        assert_eq!(normalize_resource(" /v1/x?y=1#z ").as_deref(), Some("/v1/x"));
        assert_eq!(normalize_resource("v1/x").as_deref(), Some("/v1/x"));
        assert_eq!(normalize_resource("a#b?c").as_deref(), Some("/a"));
        assert_eq!(normalize_resource("https://x/y").as_deref(), Some("/https://x/y"));
        assert_eq!(normalize_resource("//A/b/").as_deref(), Some("//A/b/"));
        assert_eq!(normalize_resource("   "), None);
        assert_eq!(normalize_resource("?q=1"), None);
        assert_eq!(normalize_resource(" #x"), None);
        assert_eq!(normalize_resource(" ? x"), None);
    }

    #[test]
    fn methods() {
        assert_eq!(normalize_method(" get ").as_deref(), Some("GET"));
        assert_eq!(normalize_method("options").as_deref(), Some("OPTIONS"));
        assert_eq!(normalize_method("TRACE"), None);
        assert_eq!(normalize_method(""), None);
    }

    #[test]
    fn api_key_format() {
        let tail = "A".repeat(43);
        assert!(api_key_format_ok(&format!("sk_{tail}")));
        assert!(!api_key_format_ok(&format!("s_{tail}")));
        assert!(!api_key_format_ok(&format!("sk_{}.", "A".repeat(42))));
    }

    #[test]
    fn timestamps_like_chrono() {
        let base = UNIX_EPOCH + Duration::from_secs(1_782_741_911);
        assert_eq!(format_rfc3339_micros(base), "2026-06-29T14:05:11Z");
        assert_eq!(
            format_rfc3339_micros(base + Duration::from_millis(120)),
            "2026-06-29T14:05:11.120Z"
        );
        assert_eq!(
            format_rfc3339_micros(base + Duration::from_micros(482_913)),
            "2026-06-29T14:05:11.482913Z"
        );
        assert_eq!(
            format_rfc3339_micros(base + Duration::from_nanos(482_913_777)),
            "2026-06-29T14:05:11.482913Z"
        );
    }

    #[test]
    fn labels() {
        assert_eq!(window_label(60_000), "60s");
        assert_eq!(window_label(999), "999ms");
        assert_eq!(window_label(1500), "1s");
        assert_eq!(window_label(2_592_000_000), "2592000s");
    }

    #[test]
    fn header_values() {
        let mut map = BTreeMap::new();
        put_header(&mut map, "X-A", "ok");
        put_header(&mut map, "x-b", "bad\nvalue");
        put_header(&mut map, "x-c", "caf\u{e9}");
        assert_eq!(map.get("x-a").map(String::as_str), Some("ok"));
        assert_eq!(map.get("x-b").map(String::as_str), Some("invalid"));
        assert!(!map.contains_key("x-c"));
    }
}
