//! Mutable gateway state and the check pipeline that runs under its lock.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::StatusCode;

use super::model::{ApiKeyGrant, Fault, RecordedRequest, SYNTHETIC_CLIENT_ID, ScopeDefinition, TokenGrant};
use super::protocol::{self, CheckRequest, Decision, PrincipalType, RateLimitEntry, RateOutcome, Verdict};

/// How many recorded requests are kept.
pub(crate) const RECORDED_REQUESTS_CAP: usize = 1000;

/// Default rule: 1000 requests per minute, `per_app`.
const DEFAULT_MAX_REQUESTS: u32 = 1000;
const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

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

/// The single configured rate-limit rule.
#[derive(Clone, Copy, Debug)]
struct Rule {
    max_requests: u32,
    window: Duration,
}

/// Everything the fake gateway knows; guarded by one mutex, never held across an await.
#[derive(Debug)]
pub(crate) struct State {
    tokens: HashMap<String, TokenEntry>,
    api_keys: HashMap<String, ApiKeyEntry>,
    scope_definitions: Vec<ScopeDefinition>,
    rule: Rule,
    /// Sliding-window log per counter key: instants of the counted requests.
    counters: HashMap<String, VecDeque<Instant>>,
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
            rule: Rule {
                max_requests: DEFAULT_MAX_REQUESTS,
                window: DEFAULT_WINDOW,
            },
            counters: HashMap::new(),
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
        self.rule = Rule { max_requests, window };
        self.counters.clear();
    }

    pub(crate) fn reset_rate_limits(&mut self) {
        self.counters.clear();
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
    /// ([`Fault::RateLimited`]).
    pub(crate) fn check(&mut self, req: &CheckRequest, forced_retry_ms: Option<u64>) -> Reply {
        let request_id = self.next_request_id();
        let envelope = |status: StatusCode, id: String| Reply::json(status, &Decision::envelope(id));

        if protocol::normalize_method(&req.method).is_none() {
            return envelope(StatusCode::BAD_REQUEST, request_id);
        }
        if protocol::normalize_resource(&req.resource).is_none() {
            return envelope(StatusCode::BAD_REQUEST, request_id);
        }
        let value = req.principal.value.trim();
        if value.is_empty() {
            return envelope(StatusCode::UNAUTHORIZED, request_id);
        }
        if req.principal.kind == PrincipalType::ApiKey {
            return self.check_api_key(request_id, value, req, forced_retry_ms);
        }

        let hash = super::ids::hash_token(value);
        let Some(entry) = self.tokens.get(&hash) else {
            return envelope(StatusCode::UNAUTHORIZED, request_id);
        };
        if !protocol::is_active(&entry.grant, entry.revoked, SystemTime::now()) {
            return envelope(StatusCode::UNAUTHORIZED, request_id);
        }
        let grant = entry.grant.clone();
        let decision = self.decide(request_id, &grant, req, forced_retry_ms);
        Reply {
            is_decision: true,
            ..Reply::json(StatusCode::OK, &decision)
        }
    }

    /// `gateway-protocol.md` §4: the format, the look-up (unknown, revoked or deactivated:
    /// the plain-text `401 Invalid API key`), the expiry (the JSON envelope), then
    /// permissions and rate limiting as for a token (`per_app`: the key's app).
    fn check_api_key(
        &mut self,
        request_id: String,
        value: &str,
        req: &CheckRequest,
        forced_retry_ms: Option<u64>,
    ) -> Reply {
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
        let expression = protocol::permission_expression(req.required_permissions.as_deref());
        let permitted = expression
            .as_deref()
            .is_none_or(|expr| protocol::evaluate_permissions(expr, &permissions));
        let verdict = if !permitted {
            Verdict::PermissionDenied
        } else {
            let counter = format!("{}:{}", key.deployment_id, key.app_slug);
            Verdict::Rated(self.rate_limit(&counter, forced_retry_ms))
        };
        let decision = protocol::api_key_decision(request_id, &key, permissions, verdict);
        Reply {
            is_decision: true,
            ..Reply::json(StatusCode::OK, &decision)
        }
    }

    /// Steps 6 to 9 for an active token.
    fn decide(
        &mut self,
        request_id: String,
        grant: &TokenGrant,
        req: &CheckRequest,
        forced_retry_ms: Option<u64>,
    ) -> Decision {
        let permissions = protocol::effective_permissions(grant, &self.scope_definitions);
        let expression = protocol::permission_expression(req.required_permissions.as_deref());
        let permitted = expression
            .as_deref()
            .is_none_or(|expr| protocol::evaluate_permissions(expr, &permissions));
        let verdict = if !permitted {
            Verdict::PermissionDenied
        } else {
            let key = format!("{}:{}", grant.deployment_id, protocol::app_slug(grant));
            Verdict::Rated(self.rate_limit(&key, forced_retry_ms))
        };
        protocol::oauth_decision(request_id, grant, permissions, verdict)
    }

    /// Applies the single sliding-window rule to counter `key` (per_app).
    fn rate_limit(&mut self, key: &str, forced_retry_ms: Option<u64>) -> RateOutcome {
        let rule = self.rule;
        let window_ms = u64::try_from(rule.window.as_millis()).unwrap_or(u64::MAX);
        let limit = u64::from(rule.max_requests);
        let label = protocol::window_label(window_ms);
        let entry = |remaining: u64| RateLimitEntry {
            rule: format!("{limit}/{label}"),
            remaining,
            limit,
        };
        if let Some(retry) = forced_retry_ms {
            return RateOutcome {
                window_label: label.clone(),
                entry: entry(0),
                blocked: Some(retry),
            };
        }

        let now = Instant::now();
        let log = self.counters.entry(key.to_owned()).or_default();
        while let Some(first) = log.front() {
            if now.duration_since(*first) >= rule.window {
                log.pop_front();
            } else {
                break;
            }
        }
        let count = u64::try_from(log.len()).unwrap_or(u64::MAX);
        if count < limit {
            log.push_back(now);
            RateOutcome {
                window_label: label.clone(),
                entry: entry(limit - count - 1),
                blocked: None,
            }
        } else {
            RateOutcome {
                window_label: label.clone(),
                entry: entry(limit.saturating_sub(count)),
                blocked: Some(window_ms),
            }
        }
    }

    /// A valid allowed decision for a placeholder token, for faults that need a decision
    /// body when the request itself does not yield one. Not rate limited or counted.
    pub(crate) fn synthetic_decision(&mut self) -> Bytes {
        let request_id = self.next_request_id();
        let grant = TokenGrant::new(SYNTHETIC_CLIENT_ID);
        let permissions = protocol::effective_permissions(&grant, &self.scope_definitions);
        let window_ms = u64::try_from(self.rule.window.as_millis()).unwrap_or(u64::MAX);
        let limit = u64::from(self.rule.max_requests);
        let label = protocol::window_label(window_ms);
        let outcome = RateOutcome {
            entry: RateLimitEntry {
                rule: format!("{limit}/{label}"),
                remaining: limit.saturating_sub(1),
                limit,
            },
            window_label: label,
            blocked: None,
        };
        protocol::oauth_decision(request_id, &grant, permissions, Verdict::Rated(outcome)).to_bytes()
    }
}
