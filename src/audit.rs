//! The audit trail: one [`AuditRecord`] per decision the layer makes (a hit, a miss after its
//! verification, a refusal), emitted as a `tracing` event on the target
//! [`TRACING_TARGET`] and/or handed to an [`AuditSink`]. Off by default; enable it with
//! [`WachtAuthConfigBuilder::audit`](crate::WachtAuthConfigBuilder::audit) (or
//! `WACHT_AUDIT=on` for the tracing event).
//!
//! A record never holds the credential, nor its hash: who the caller is comes from the
//! verified principal (client id, user id, tenant), the rest from the request's method and
//! route.
//!
//! The tracing event is at `INFO` with these attributes (OpenTelemetry semantic conventions
//! where one exists):
//!
//! | attribute | record field | value |
//! | --- | --- | --- |
//! | `wacht.decision.source` | [`source`](AuditRecord::source) | `front`, `cache`, `fleet`, `gateway`, `jwt` or `local` |
//! | `wacht.credential.kind` | [`credential_kind`](AuditRecord::credential_kind) | `oauth_access_token`, `jwt_access_token`, `api_key` (absent without a credential) |
//! | `wacht.client.id` | [`client_id`](AuditRecord::client_id) | the OAuth client (an API key's app) |
//! | `enduser.id` | [`user_id`](AuditRecord::user_id) | the user who granted the token or owns the key |
//! | `wacht.tenant` | [`tenant`](AuditRecord::tenant) | the granted resource (`urn:wacht:...`) |
//! | `http.request.method` | [`method`](AuditRecord::method) | the request's method |
//! | `http.route` | [`http_route`](AuditRecord::http_route) | the route template the framework matched (absent without one) |
//! | `wacht.route` | [`route`](AuditRecord::route) | the route as [`RouteRequest::automatic`](crate::route::RouteRequest::automatic) reports it to the gateway |
//! | `mcp.method.name` | [`mcp_method`](AuditRecord::mcp_method) | the 2026-07-28 `Mcp-Method` header |
//! | `gen_ai.tool.name` | [`mcp_tool`](AuditRecord::mcp_tool) | the `Mcp-Name` of a `tools/call` |
//! | `gen_ai.prompt.name` | [`mcp_tool`](AuditRecord::mcp_tool) | the `Mcp-Name` of a `prompts/get` |
//! | `wacht.outcome` | [`outcome`](AuditRecord::outcome) | `allowed`, `refused`, `rate_limited`, `unavailable`, `anonymous`, `cancelled` |
//! | `wacht.outcome.reason` | [`reason`](AuditRecord::reason) | a refusal's label (`rejected`, `malformed`, `missing_credentials`, ...) |
//! | `wacht.decision.duration_ms` | [`duration`](AuditRecord::duration) | from the request's arrival to the decision, in milliseconds (fractional) |
//! | `wacht.rate_limit.remaining` | [`rate_limit_remaining`](AuditRecord::rate_limit_remaining) | the tightest rule's budget left (absent when no rule applied) |

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Method, Request};
use tokio::sync::mpsc;

use crate::principal::{CredentialKind, Principal};
use crate::reject::AuthError;
use crate::route::RouteRequest;

/// The `tracing` target of audit events.
pub const TRACING_TARGET: &str = "tower_wacht::audit";

/// Where a verdict came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecisionSource {
    /// This thread's front cache.
    Front,
    /// This process's shared cache (an answer verified here; also a 429 of the rate-limit
    /// meters, an answer of the outage grace, and a cached credential served on a route
    /// whose rules the gateway could not say).
    Cache,
    /// This process's shared cache holding a copy of the fleet's shared tier.
    Fleet,
    /// The Wacht gateway (in fleet mode, possibly through the fleet's shared tier; a refusal
    /// remembered from an earlier gateway answer is reported so too).
    Gateway,
    /// Local verification of a JWT access token.
    Jwt,
    /// Decided here without asking anyone: refused (no credential, a malformed one, a kind
    /// this layer does not take, a fleet out of sync, the cap on gateway calls in flight
    /// reached), or an anonymous request let through.
    Local,
}

impl DecisionSource {
    /// `front`, `cache`, `fleet`, `gateway`, `jwt` or `local`.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionSource::Front => "front",
            DecisionSource::Cache => "cache",
            DecisionSource::Fleet => "fleet",
            DecisionSource::Gateway => "gateway",
            DecisionSource::Jwt => "jwt",
            DecisionSource::Local => "local",
        }
    }
}

/// What the layer decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditOutcome {
    /// The request went on to the service.
    Allowed,
    /// Refused (401, 400 or 403); [`AuditRecord::reason`] says why.
    Refused,
    /// Refused with 429.
    RateLimited,
    /// Refused with 503: the credential could not be verified now.
    Unavailable,
    /// No credential, and the request went on without one: an `optional` layer's anonymous
    /// request, or a CORS preflight passed through (`pass_cors_preflight`).
    Anonymous,
    /// The request went away before a decision: its client disconnected, or the server
    /// dropped it, while its credential was being verified (the gateway may have been asked).
    Cancelled,
}

impl AuditOutcome {
    /// `allowed`, `refused`, `rate_limited`, `unavailable`, `anonymous` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Allowed => "allowed",
            AuditOutcome::Refused => "refused",
            AuditOutcome::RateLimited => "rate_limited",
            AuditOutcome::Unavailable => "unavailable",
            AuditOutcome::Anonymous => "anonymous",
            AuditOutcome::Cancelled => "cancelled",
        }
    }
}

/// One decision of the layer. Never holds the credential or its hash.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AuditRecord {
    /// Where the verdict came from.
    pub source: DecisionSource,
    /// The credential's kind; `None` when the request carried none.
    pub credential_kind: Option<CredentialKind>,
    /// The verified OAuth client id (an API key's app); `None` when refused.
    pub client_id: Option<String>,
    /// The verified user (the grant's owner, the key's owner); `None` when refused or unknown.
    pub user_id: Option<String>,
    /// The granted resource (tenant URN), when the grant has one.
    pub tenant: Option<String>,
    /// The request's HTTP method.
    pub method: Method,
    /// The request's route, as [`RouteRequest::automatic`] reports it to the gateway (a
    /// template, a gRPC method path, an MCP method and tool, else the path; never a query).
    pub route: String,
    /// The route template the framework matched (Axum's `MatchedPath`), when it has one.
    pub http_route: Option<String>,
    /// The MCP method of a 2026-07-28 request (`Mcp-Method`), when its route names it.
    pub mcp_method: Option<String>,
    /// The tool or prompt of a `tools/call` or `prompts/get` (`Mcp-Name`), when its route names it.
    pub mcp_tool: Option<String>,
    /// What the layer decided.
    pub outcome: AuditOutcome,
    /// A refusal's label ([`InvalidTokenReason::label`](crate::reject::InvalidTokenReason::label)
    /// for an invalid token, else [`AuthError::label`]); `None` when allowed.
    pub reason: Option<&'static str>,
    /// From the request's arrival at the layer to the decision.
    pub duration: Duration,
    /// The remaining budget of the tightest rate-limit rule that applied (after this
    /// request); `None` when no rule applied or metering is off.
    pub rate_limit_remaining: Option<u64>,
}

/// A bounded queue of [`AuditRecord`]s to a consumer of yours. The request path never waits
/// on it: when the queue is full (or its receiver gone) the record is dropped and counted
/// ([`dropped`](Self::dropped), and the metric `wacht_audit_dropped_total`).
#[derive(Clone, Debug)]
pub struct AuditSink {
    sender: mpsc::Sender<AuditRecord>,
    dropped: Arc<AtomicU64>,
}

impl AuditSink {
    /// A sink holding at most `capacity` records (at least 1) until the receiver takes them.
    pub fn channel(capacity: usize) -> (AuditSink, mpsc::Receiver<AuditRecord>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let sink = AuditSink {
            sender,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (sink, receiver)
    }

    /// Records dropped so far because the queue was full or its receiver gone.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn offer(&self, record: AuditRecord) {
        if self.sender.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            crate::telemetry::audit_dropped();
        }
    }
}

/// Where the audit trail goes (default: nowhere).
#[derive(Clone, Debug, Default)]
pub struct AuditConfig {
    tracing: bool,
    sink: Option<AuditSink>,
}

impl AuditConfig {
    /// No audit trail (the default).
    pub fn new() -> Self {
        Self::default()
    }

    /// Emit each record as an `INFO` event on the target [`TRACING_TARGET`].
    pub fn tracing(mut self, on: bool) -> Self {
        self.tracing = on;
        self
    }

    /// Hand each record to `sink`.
    pub fn sink(mut self, sink: AuditSink) -> Self {
        self.sink = Some(sink);
        self
    }

    /// True when records go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.tracing || self.sink.is_some()
    }
}

/// An enabled audit trail, shared by a layer's services.
#[derive(Debug)]
pub(crate) struct Auditor {
    config: AuditConfig,
}

impl Auditor {
    /// The auditor of `config`, if it is enabled.
    pub(crate) fn of(config: &AuditConfig) -> Option<Arc<Auditor>> {
        config
            .is_enabled()
            .then(|| Arc::new(Auditor { config: config.clone() }))
    }

    /// Starts a request's record: its arrival, its route. `None` when nothing would take
    /// it: no sink, and the subscriber filters the tracing target out.
    pub(crate) fn begin<B>(self: &Arc<Self>, req: &Request<B>) -> Option<Box<Pending>> {
        if self.config.sink.is_none() && !tracing::enabled!(target: TRACING_TARGET, tracing::Level::INFO) {
            return None;
        }
        let started = Instant::now();
        let view = RouteRequest::of(req);
        let method = req.method().clone();
        let route = view.automatic_bounded().into_owned();
        #[cfg(feature = "axum")]
        let http_route = view.matched_path().map(str::to_owned);
        #[cfg(not(feature = "axum"))]
        let http_route = None;
        let (mcp_method, mcp_tool) = match view.mcp_parts() {
            Some((method, tool)) => (Some(method.to_owned()), tool.map(str::to_owned)),
            None => (None, None),
        };
        Some(Box::new(Pending {
            auditor: Arc::clone(self),
            started,
            method,
            route,
            http_route,
            mcp_method,
            mcp_tool,
            kind: None,
            remaining: None,
            deferred_source: None,
            decided: false,
        }))
    }

    fn emit(&self, record: AuditRecord) {
        if self.config.tracing {
            // MCP's conventions name a prompt `gen_ai.prompt.name`, a tool `gen_ai.tool.name`.
            let prompt = record.mcp_method.as_deref() == Some("prompts/get");
            tracing::event!(
                target: TRACING_TARGET,
                tracing::Level::INFO,
                wacht.decision.source = record.source.as_str(),
                wacht.credential.kind = record.credential_kind.map(CredentialKind::as_str),
                wacht.client.id = record.client_id.as_deref(),
                enduser.id = record.user_id.as_deref(),
                wacht.tenant = record.tenant.as_deref(),
                http.request.method = record.method.as_str(),
                http.route = record.http_route.as_deref(),
                wacht.route = record.route.as_str(),
                mcp.method.name = record.mcp_method.as_deref(),
                gen_ai.tool.name = record.mcp_tool.as_deref().filter(|_| !prompt),
                gen_ai.prompt.name = record.mcp_tool.as_deref().filter(|_| prompt),
                wacht.outcome = record.outcome.as_str(),
                wacht.outcome.reason = record.reason,
                wacht.decision.duration_ms = record.duration.as_secs_f64() * 1000.0,
                wacht.rate_limit.remaining = record.rate_limit_remaining,
                "wacht auth decision"
            );
        }
        if let Some(sink) = &self.config.sink {
            sink.offer(record);
        }
    }
}

/// A request's record until its decision is known.
pub(crate) struct Pending {
    auditor: Arc<Auditor>,
    started: Instant,
    method: Method,
    route: String,
    http_route: Option<String>,
    mcp_method: Option<String>,
    mcp_tool: Option<String>,
    kind: Option<CredentialKind>,
    remaining: Option<u64>,
    /// Where a deferred verdict comes from when it is not a verification: a cached hit that
    /// waited for the fleet's count.
    deferred_source: Option<DecisionSource>,
    /// Its record was written; dropped before, it writes a `cancelled` one.
    decided: bool,
}

impl Pending {
    /// The request's credential: its kind by the configured API-key prefixes (`kind`), a JWT
    /// by its shape (as the verifier judges it: `jwt_shaped`).
    pub(crate) fn credential(&mut self, kind: CredentialKind, jwt_shaped: bool) {
        self.kind = Some(match kind {
            CredentialKind::OAuthAccessToken if jwt_shaped => CredentialKind::JwtAccessToken,
            other => other,
        });
    }

    /// A deferred verdict that is a cached hit's (it waited for the fleet's count): its tier.
    pub(crate) fn deferred(&mut self, source: Option<DecisionSource>) {
        self.deferred_source = source;
    }

    /// Where a miss's verdict comes from: the cache tier of a hit that waited for the fleet's
    /// count, the JWT verifier for a JWT, else the gateway.
    pub(crate) fn miss_source(&self) -> DecisionSource {
        if let Some(source) = self.deferred_source {
            source
        } else if self.kind == Some(CredentialKind::JwtAccessToken) {
            DecisionSource::Jwt
        } else {
            DecisionSource::Gateway
        }
    }

    /// The rate-limit budget left after this request, if a rule applied.
    pub(crate) fn remaining(&mut self, usage: Option<&crate::rate_limit::Usage>) {
        self.remaining = usage.map(|u| u.remaining);
    }

    /// The request was allowed: `principal` is its caller.
    pub(crate) fn allowed(mut self, source: DecisionSource, principal: &Principal) {
        let source = match (source, principal.verified_by()) {
            (DecisionSource::Gateway, crate::principal::VerifiedBy::JwtSignature) => DecisionSource::Jwt,
            (source, _) => source,
        };
        let mut record = self.take_record(source, AuditOutcome::Allowed, None);
        record.credential_kind = Some(principal.credential_kind());
        record.client_id = Some(principal.client_id().to_string());
        record.user_id = principal.owner_user_id().map(|id| id.to_string());
        record.tenant = principal.granted_resource().map(ToString::to_string);
        self.auditor.emit(record);
    }

    /// The request was refused with `error`.
    pub(crate) fn refused(mut self, source: DecisionSource, error: &AuthError) {
        // A cached hit refused by its meters is the cache's refusal, whichever tier had it.
        let source = match (self.deferred_source, error) {
            (Some(_), AuthError::RateLimited { .. }) => DecisionSource::Cache,
            _ => source,
        };
        let (outcome, reason) = match error {
            AuthError::RateLimited { .. } => (AuditOutcome::RateLimited, None),
            AuthError::Unavailable { .. } => (AuditOutcome::Unavailable, None),
            AuthError::InvalidToken(reason) => (AuditOutcome::Refused, Some(reason.label())),
            other => (AuditOutcome::Refused, Some(other.label())),
        };
        let record = self.take_record(source, outcome, reason);
        self.auditor.emit(record);
    }

    /// The request carried no credential and went on without one.
    pub(crate) fn anonymous(mut self) {
        let record = self.take_record(DecisionSource::Local, AuditOutcome::Anonymous, None);
        self.auditor.emit(record);
    }

    /// The record, without a principal's fields yet (marked written).
    fn take_record(
        &mut self,
        source: DecisionSource,
        outcome: AuditOutcome,
        reason: Option<&'static str>,
    ) -> AuditRecord {
        self.decided = true;
        AuditRecord {
            source,
            credential_kind: self.kind,
            client_id: None,
            user_id: None,
            tenant: None,
            method: std::mem::replace(&mut self.method, Method::GET),
            route: std::mem::take(&mut self.route),
            http_route: self.http_route.take(),
            mcp_method: self.mcp_method.take(),
            mcp_tool: self.mcp_tool.take(),
            outcome,
            reason,
            duration: self.started.elapsed(),
            rate_limit_remaining: self.remaining,
        }
    }
}

impl Drop for Pending {
    /// A request dropped before its decision (its client went away while the credential was
    /// being verified) still leaves its record: `cancelled`, from where the verdict was to
    /// come.
    fn drop(&mut self) {
        if !self.decided {
            let source = self.miss_source();
            let record = self.take_record(source, AuditOutcome::Cancelled, None);
            self.auditor.emit(record);
        }
    }
}
