//! Mutable gateway state and the check pipeline that runs under its lock.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::StatusCode;

use super::limiter::{self, Limiter, Subject};
use super::model::{ApiKeyGrant, Fault, RecordedRequest, SYNTHETIC_CLIENT_ID, ScopeDefinition, TokenGrant};
use super::protocol::{self, CheckRequest, Decision, PrincipalType, Verdict};
use super::rate_limits::RateLimitRule;

/// How many recorded requests are kept.
pub(crate) const RECORDED_REQUESTS_CAP: usize = 1000;

pub(crate) const JSON: &str = "application/json";
pub(crate) const PLAIN: &str = "text/plain; charset=utf-8";

/// A registered token.
#[derive(Debug)]
struct TokenEntry {
    grant: TokenGrant,
    revoked: bool,
}

/// A registered API key.
#[derive(Debug)]
struct ApiKeyEntry {
    grant: ApiKeyGrant,
    revoked: bool,
}

/// One schema-valid check request and what the handler derived from it.
struct Call<'a> {
    req: &'a CheckRequest,
    /// The normalised resource.
    resource: &'a str,
    /// The client IP after the fallbacks.
    client_ip: &'a str,
    forced_retry_ms: Option<u64>,
}

/// Everything the fake gateway knows; guarded by one mutex, never held across an await.
#[derive(Debug)]
pub(crate) struct State {
    tokens: HashMap<String, TokenEntry>,
    api_keys: HashMap<String, ApiKeyEntry>,
    scope_definitions: Vec<ScopeDefinition>,
    limiter: Limiter,
    pub(crate) fault: Option<Fault>,
    pub(crate) calls: usize,
    pub(crate) requests: VecDeque<RecordedRequest>,
    next_request_id: u64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            tokens: HashMap::new(),
            api_keys: HashMap::new(),
            scope_definitions: Vec::new(),
            limiter: Limiter::default(),
            fault: None,
            calls: 0,
            requests: VecDeque::new(),
            next_request_id: 1,
        }
    }
}

/// An answer to send: status, content type and complete body.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) content_type: &'static str,
    pub(crate) body: Bytes,
    /// True for a `200` decision body (not an envelope, not plain text).
    pub(crate) is_decision: bool,
}

impl Reply {
    pub(crate) fn plain(status: StatusCode, text: impl Into<String>) -> Self {
        Self {
            status,
            content_type: PLAIN,
            body: Bytes::from(text.into()),
            is_decision: false,
        }
    }

    fn json(status: StatusCode, decision: &Decision) -> Self {
        Self {
            status,
            content_type: JSON,
            body: decision.to_bytes(),
            is_decision: false,
        }
    }
}

impl State {
    pub(crate) fn register(&mut self, hash: String, grant: TokenGrant) {
        self.tokens.insert(hash, TokenEntry { grant, revoked: false });
    }

    pub(crate) fn register_api_key(&mut self, hash: String, grant: ApiKeyGrant) {
        self.api_keys.insert(hash, ApiKeyEntry { grant, revoked: false });
    }

    /// Revokes a token or an API key.
    pub(crate) fn revoke(&mut self, hash: &str) {
        if let Some(entry) = self.tokens.get_mut(hash) {
            entry.revoked = true;
        }
        if let Some(entry) = self.api_keys.get_mut(hash) {
            entry.revoked = true;
        }
    }

    pub(crate) fn set_scope_definitions(&mut self, defs: Vec<ScopeDefinition>) {
        self.scope_definitions = defs;
    }

    pub(crate) fn set_rate_limit(&mut self, max_requests: u32, window: Duration) {
        self.limiter
            .set_rules(Some(vec![limiter::single_rule(max_requests, window)]));
    }

    /// `None`: back to the default rule.
    pub(crate) fn set_rate_limit_rules(&mut self, rules: Option<Vec<RateLimitRule>>) {
        self.limiter.set_rules(rules);
    }

    pub(crate) fn reset_rate_limits(&mut self) {
        self.limiter.reset();
    }

    pub(crate) fn record(&mut self, request: RecordedRequest) {
        if self.requests.len() >= RECORDED_REQUESTS_CAP {
            self.requests.pop_front();
        }
        self.requests.push_back(request);
    }

    pub(crate) fn next_request_id(&mut self) -> String {
        let id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1);
        format!("req_{id}")
    }

    /// The error envelope with a fresh request id.
    pub(crate) fn envelope_reply(&mut self, status: StatusCode) -> Reply {
        let decision = Decision::envelope(self.next_request_id());
        Reply::json(status, &decision)
    }

    /// Handler logic (section 3.1 checks 1 to 9) for a schema-valid request.
    ///
    /// `forced_retry_ms` makes the rate-limit step block with that retry-after value
    /// ([`Fault::RateLimited`]). `fallback_ip` is the client IP when the body has none (the
    /// `x-original-client-ip` header, else the TCP peer, else `unknown`).
    pub(crate) fn check(&mut self, req: &CheckRequest, fallback_ip: &str, forced_retry_ms: Option<u64>) -> Reply {
        let request_id = self.next_request_id();
        let envelope = |status: StatusCode, id: String| Reply::json(status, &Decision::envelope(id));

        if protocol::normalize_method(&req.method).is_none() {
            return envelope(StatusCode::BAD_REQUEST, request_id);
        }
        let Some(resource) = protocol::normalize_resource(&req.resource) else {
            return envelope(StatusCode::BAD_REQUEST, request_id);
        };
        let client_ip = req
            .client_ip
            .as_deref()
            .map(str::trim)
            .filter(|ip| !ip.is_empty())
            .unwrap_or(fallback_ip);
        let call = Call {
            req,
            resource: &resource,
            client_ip,
            forced_retry_ms,
        };
        let value = req.principal.value.trim();
        if value.is_empty() {
            return envelope(StatusCode::UNAUTHORIZED, request_id);
        }
        if req.principal.kind == PrincipalType::ApiKey {
            return self.check_api_key(request_id, value, &call);
        }

        let hash = super::ids::hash_token(value);
        let Some(entry) = self.tokens.get(&hash) else {
            return envelope(StatusCode::UNAUTHORIZED, request_id);
        };
        if !protocol::is_active(&entry.grant, entry.revoked, SystemTime::now()) {
            return envelope(StatusCode::UNAUTHORIZED, request_id);
        }
        let grant = entry.grant.clone();
        let decision = self.decide(request_id, &grant, &format!("token:{hash}"), &call);
        Reply {
            is_decision: true,
            ..Reply::json(StatusCode::OK, &decision)
        }
    }

    /// `gateway-protocol.md` §4: the format, the look-up (unknown, revoked or deactivated:
    /// the plain-text `401 Invalid API key`), the expiry (the JSON envelope), then
    /// permissions and rate limiting as for a token (`per_app`: the key's app).
    fn check_api_key(&mut self, request_id: String, value: &str, call: &Call<'_>) -> Reply {
        if !protocol::api_key_format_ok(value) {
            return Reply::json(StatusCode::UNAUTHORIZED, &Decision::envelope(request_id));
        }
        let hash = super::ids::hash_token(value);
        let key = match self.api_keys.get(&hash) {
            Some(entry) if !entry.revoked => entry.grant.clone(),
            _ => return Reply::plain(StatusCode::UNAUTHORIZED, "Invalid API key"),
        };
        if key.expires_at.is_some_and(|at| at <= SystemTime::now()) {
            return Reply::json(StatusCode::UNAUTHORIZED, &Decision::envelope(request_id));
        }
        let permissions = key.effective_permissions();
        let credential = format!("key:{}", key.key_id);
        let verdict = self.verdict(&permissions, key.deployment_id, &key.app_slug, &credential, call);
        let decision = protocol::api_key_decision(request_id, &key, permissions, verdict);
        Reply {
            is_decision: true,
            ..Reply::json(StatusCode::OK, &decision)
        }
    }

    /// Steps 6 to 9 for an active token; `credential` is its counter key part `P`.
    fn decide(&mut self, request_id: String, grant: &TokenGrant, credential: &str, call: &Call<'_>) -> Decision {
        let permissions = protocol::effective_permissions(grant, &self.scope_definitions);
        let slug = protocol::app_slug(grant);
        let verdict = self.verdict(&permissions, grant.deployment_id, &slug, credential, call);
        protocol::oauth_decision(request_id, grant, permissions, verdict)
    }

    /// Steps 8 and 9: the permission check, then (if it passed) every applicable rate-limit
    /// rule.
    fn verdict(
        &mut self,
        permissions: &[String],
        deployment_id: i64,
        app_slug: &str,
        credential: &str,
        call: &Call<'_>,
    ) -> Verdict {
        let expression = protocol::permission_expression(call.req.required_permissions.as_deref());
        let permitted = expression
            .as_deref()
            .is_none_or(|expr| protocol::evaluate_permissions(expr, permissions));
        if !permitted {
            return Verdict::PermissionDenied;
        }
        let subject = Subject {
            deployment_id,
            app_slug,
            credential,
            client_ip: call.client_ip,
            resource: call.resource,
        };
        Verdict::Rated(self.limiter.evaluate(&subject, call.forced_retry_ms))
    }

    /// A valid allowed decision for a placeholder token, for faults that need a decision
    /// body when the request itself does not yield one. Not rate limited or counted.
    pub(crate) fn synthetic_decision(&mut self) -> Bytes {
        let request_id = self.next_request_id();
        let grant = TokenGrant::new(SYNTHETIC_CLIENT_ID);
        let permissions = protocol::effective_permissions(&grant, &self.scope_definitions);
        let outcomes = self.limiter.preview();
        protocol::oauth_decision(request_id, &grant, permissions, Verdict::Rated(outcomes)).to_bytes()
    }
}
