//! [`Verifier`]: token → [`Principal`]. Owns the decision caches, the gateway and the pinning
//! checks; the layer is a thin shell over it.
//!
//! * Positive cache (moka): SHA-256 of the token → principal, each entry living
//!   `min(ttl, expires_at - now)`.
//! * Single flight: concurrent misses for one token share one gateway call (`try_get_with`).
//! * Negative cache (moka, separate and smaller): tokens the gateway rejected, for a short ttl,
//!   so floods of a bad token do not reach the gateway and cannot evict good entries.
//! * Errors (429, 5xx, timeouts) are never cached.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt as _;
use moka::future::Cache;
use reqwest::Url;
use tracing::Instrument as _;

use crate::cache::{DigestHasher, Interner, front_get, front_put};
use crate::config::WachtAuthConfig;
use crate::gateway::{CheckRequest, Decision, Gateway, GatewayError};
use crate::principal::{ClientId, DeploymentId, Grant, Principal, StringSet};
use crate::reject::{AuthError, ChallengeParams};
use crate::token::{BearerToken, TokenHash, parse_token};

const REJECTED: &str = "The access token is invalid, expired or revoked.";
const WRONG_DEPLOYMENT: &str = "The access token was issued by another deployment.";
const WRONG_ISSUER: &str = "The access token was issued by another issuer.";
const WRONG_AUDIENCE: &str = "The access token was not issued for this resource.";
/// Used when the gateway rate-limits without saying for how long.
const DEFAULT_RATE_LIMIT_RETRY: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct Entry {
    principal: Principal,
    /// When the entry stops being served: `min(now + ttl, expires_at)` at insertion.
    deadline: Instant,
}

/// Distinguishes verifiers in the per-thread front cache (one cache per check profile).
static NEXT_VERIFIER_ID: AtomicU64 = AtomicU64::new(1);

/// The outcome of a miss that must not be cached, shared by every request that waited on it.
enum Uncached {
    /// Allowed, but not cacheable (already expired by our clock, or invalidated meanwhile).
    Allowed(Principal),
    Rejected(AuthError),
}

/// Verifies tokens for one check profile (gateway, method, resource, pinning). Cheap to share
/// behind an `Arc`; every [`WachtAuthLayer`](crate::WachtAuthLayer) clone uses the same one.
pub struct Verifier {
    id: u64,
    gateway: Arc<dyn Gateway>,
    positive: Cache<TokenHash, Entry, DigestHasher>,
    /// Rejected tokens and why, so a repeat gets the same `error_description`.
    negative: Option<Cache<TokenHash, &'static str, DigestHasher>>,
    interner: Interner,
    /// Bumped by every invalidation, so a gateway answer that raced with one is not cached.
    generation: AtomicU64,
    method: String,
    resource: String,
    ttl: Duration,
    max_token_len: usize,
    expected_deployment_id: Option<DeploymentId>,
    expected_issuer: Option<String>,
    expected_audience: Option<Url>,
    unavailable_retry_after: Duration,
    pub(crate) forward_user_agent: bool,
    pub(crate) challenge: Arc<ChallengeParams>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("method", &self.method)
            .field("resource", &self.resource)
            .field("ttl", &self.ttl)
            .field("cached", &self.positive.entry_count())
            .finish_non_exhaustive()
    }
}

/// Request context sent to the gateway on a miss.
#[derive(Debug, Default, Clone)]
pub(crate) struct MissContext {
    pub user_agent: Option<String>,
    pub client_ip: Option<String>,
}

impl Verifier {
    /// Builds a verifier over any gateway.
    pub fn new(config: &WachtAuthConfig, gateway: Arc<dyn Gateway>, challenge: Arc<ChallengeParams>) -> Self {
        let positive = Cache::builder()
            .max_capacity(config.max_capacity)
            // A flat ttl; an entry whose token expires sooner is never served past its
            // `deadline` (checked on every read). Measured: per-entry `Expiry` costs ~40 B
            // per entry and a timer-wheel node, for no behaviour we need.
            .time_to_live(config.ttl)
            .build_with_hasher(DigestHasher);
        let negative = (!config.negative_ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(config.negative_max_capacity)
                .time_to_live(config.negative_ttl)
                .build_with_hasher(DigestHasher)
        });
        Verifier {
            id: NEXT_VERIFIER_ID.fetch_add(1, Ordering::Relaxed),
            gateway,
            interner: Interner::default(),
            positive,
            negative,
            generation: AtomicU64::new(0),
            method: config.method.clone(),
            resource: config.resource.clone(),
            ttl: config.ttl,
            max_token_len: config.max_token_len,
            expected_deployment_id: config.expected_deployment_id,
            expected_issuer: config.expected_issuer.clone(),
            expected_audience: config.expected_audience.as_deref().and_then(|a| Url::parse(a).ok()),
            unavailable_retry_after: config.unavailable_retry_after,
            forward_user_agent: config.forward_user_agent,
            challenge,
        }
    }

    /// Verifies a raw token (without the `Bearer ` prefix), through the cache. For callers
    /// outside HTTP (WebSocket upgrades, queues); the layer uses the same path.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let token = parse_token(token.as_bytes(), self.max_token_len)
            .map_err(|_| AuthError::InvalidToken("The access token is malformed."))?;
        let hash = token.hash();
        if let Some(p) = self.cached(&hash) {
            return Ok(p);
        }
        self.verify_miss(token, hash, MissContext::default()).await
    }

    /// The cached principal for a token hash, if present and fresh, without calling the
    /// gateway or waiting. This is the layer's hot path.
    pub fn cached(&self, hash: &TokenHash) -> Option<Principal> {
        let generation = self.generation.load(Ordering::Acquire);
        let now = Instant::now();
        if let Some(principal) = front_get(self.id, generation, hash, now) {
            return Some(principal);
        }
        // moka's `get` completes on its first poll unless it must wait for maintenance; if it
        // would wait, the miss path asks again properly.
        let entry = self.positive.get(hash).now_or_never().flatten()?;
        if now >= entry.deadline {
            return None;
        }
        front_put(self.id, generation, *hash, entry.deadline, entry.principal.clone());
        Some(entry.principal)
    }

    /// The miss path: negative cache, then one gateway call per token however many wait.
    pub(crate) async fn verify_miss(
        &self,
        token: BearerToken<'_>,
        hash: TokenHash,
        ctx: MissContext,
    ) -> Result<Principal, AuthError> {
        // Read before the lookup: an invalidation that completes after this read bumps the
        // generation past it, so whatever we find is never remembered beyond it.
        let generation = self.generation.load(Ordering::Acquire);
        // Two rounds at most: the second only if the first found an entry past its deadline
        // (a token that expired before the cache ttl) which must be replaced by a fresh answer.
        for _ in 0..2 {
            if let Some(entry) = self.positive.get(&hash).await {
                if Instant::now() < entry.deadline {
                    front_put(self.id, generation, hash, entry.deadline, entry.principal.clone());
                    return Ok(entry.principal);
                }
                self.positive.invalidate(&hash).await;
            }
            if let Some(negative) = &self.negative
                && let Some(reason) = negative.get(&hash).await
            {
                tracing::debug!(token = ?hash, cache = "negative", outcome = "invalid_token", "token rejected from the negative cache");
                return Err(AuthError::InvalidToken(reason));
            }
            let span = tracing::debug_span!(
                "wacht.verify",
                token = ?hash,
                cache = "miss",
                client_id = tracing::field::Empty,
                outcome = tracing::field::Empty,
                gateway_ms = tracing::field::Empty,
            );
            let init = self.ask_gateway(token, hash, &ctx).instrument(span);
            match self.positive.try_get_with(hash, init).await {
                Ok(entry) if self.generation.load(Ordering::Acquire) != generation => {
                    // An invalidation ran while the gateway was being asked: its answer may
                    // predate a revocation. Serve this request (the gateway allowed it) but
                    // keep nothing.
                    self.positive.invalidate(&hash).await;
                    return Ok(entry.principal);
                }
                Ok(entry) if Instant::now() >= entry.deadline => continue,
                Ok(entry) => {
                    front_put(self.id, generation, hash, entry.deadline, entry.principal.clone());
                    return Ok(entry.principal);
                }
                Err(shared) => {
                    return match &*shared {
                        Uncached::Allowed(p) => Ok(p.clone()),
                        Uncached::Rejected(e) => Err(e.clone()),
                    };
                }
            }
        }
        // Only reached if the cache kept handing back expired entries: fail closed.
        Err(AuthError::Unavailable {
            retry_after: self.unavailable_retry_after,
        })
    }

    async fn ask_gateway(&self, token: BearerToken<'_>, hash: TokenHash, ctx: &MissContext) -> Result<Entry, Uncached> {
        let request = CheckRequest {
            token,
            method: &self.method,
            resource: &self.resource,
            client_ip: ctx.client_ip.as_deref(),
            user_agent: ctx.user_agent.as_deref(),
        };
        let started = Instant::now();
        let decision = self.gateway.check(request).await;
        let span = tracing::Span::current();
        span.record("gateway_ms", started.elapsed().as_secs_f64() * 1000.0);
        let outcome = self.decide(decision, hash).await;
        match &outcome {
            Ok(entry) => {
                span.record("client_id", entry.principal.client_id().as_str());
                span.record("outcome", "allowed");
            }
            Err(Uncached::Allowed(p)) => {
                span.record("client_id", p.client_id().as_str());
                span.record("outcome", "allowed_uncached");
            }
            Err(Uncached::Rejected(e)) => {
                span.record(
                    "outcome",
                    e.error_code().unwrap_or(match e {
                        AuthError::RateLimited { .. } => "rate_limited",
                        _ => "unavailable",
                    }),
                );
            }
        }
        tracing::debug!("gateway check finished");
        outcome
    }

    async fn decide(&self, decision: Result<Decision, GatewayError>, hash: TokenHash) -> Result<Entry, Uncached> {
        let grant = match decision {
            Ok(Decision::Allowed(grant)) => grant,
            Ok(Decision::InvalidToken) => return Err(self.reject_and_remember(hash, REJECTED).await),
            Ok(Decision::PermissionDenied) => {
                return Err(Uncached::Rejected(AuthError::InsufficientScope {
                    required: Vec::new(),
                    granted: Vec::new(),
                }));
            }
            Ok(Decision::RateLimited { retry_after }) => {
                return Err(Uncached::Rejected(AuthError::RateLimited {
                    retry_after: retry_after.unwrap_or(DEFAULT_RATE_LIMIT_RETRY),
                }));
            }
            Err(error) => {
                tracing::warn!(error = %error, kind = error.kind(), "gateway unavailable; failing closed");
                return Err(Uncached::Rejected(AuthError::Unavailable {
                    retry_after: self.unavailable_retry_after,
                }));
            }
        };
        if let Some(reason) = self.pin_mismatch(&grant) {
            tracing::info!(
                client_id = grant.client_id.as_str(),
                reason,
                "token rejected by pinning"
            );
            return Err(self.reject_and_remember(hash, reason).await);
        }
        let remaining = grant
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let principal = Principal::new(self.intern(*grant), Arc::clone(&self.challenge));
        if remaining.is_zero() {
            return Err(Uncached::Allowed(principal));
        }
        Ok(Entry {
            principal,
            deadline: Instant::now() + self.ttl.min(remaining),
        })
    }

    /// Shares the parts of a grant that repeat across tokens (see [`Interner`]).
    fn intern(&self, mut grant: Grant) -> Grant {
        let i = &self.interner;
        grant.client_id = ClientId::new(i.string(grant.client_id.into_arc()));
        grant.scopes = StringSet::from_arc(i.set(grant.scopes.into_arc()));
        grant.permissions = StringSet::from_arc(i.set(grant.permissions.into_arc()));
        grant.issuer = grant.issuer.map(|s| i.string(s));
        grant.oauth_resource = grant.oauth_resource.map(|s| i.string(s));
        grant
    }

    async fn reject_and_remember(&self, hash: TokenHash, reason: &'static str) -> Uncached {
        if let Some(negative) = &self.negative {
            negative.insert(hash, reason).await;
        }
        Uncached::Rejected(AuthError::InvalidToken(reason))
    }

    fn pin_mismatch(&self, grant: &Grant) -> Option<&'static str> {
        if let Some(expected) = self.expected_deployment_id
            && grant.deployment_id != expected
        {
            return Some(WRONG_DEPLOYMENT);
        }
        if let Some(expected) = &self.expected_issuer
            && !grant.issuer.as_deref().is_some_and(|iss| same_url(iss, expected))
        {
            return Some(WRONG_ISSUER);
        }
        if let Some(expected) = &self.expected_audience {
            let matches = grant
                .oauth_resource
                .as_deref()
                .and_then(|aud| Url::parse(aud).ok())
                .is_some_and(|aud| same_resource(&aud, expected));
            if !matches {
                return Some(WRONG_AUDIENCE);
            }
        }
        None
    }

    /// Drops one token from the caches, so its next use asks the gateway again. Use it when
    /// you learn that a grant was revoked.
    pub async fn invalidate(&self, token: &str) {
        let hash = TokenHash::of(token);
        self.positive.invalidate(&hash).await;
        if let Some(negative) = &self.negative {
            negative.invalidate(&hash).await;
        }
        // After the shared cache: front caches and in-flight misses see the new generation.
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Drops every cached decision.
    pub fn invalidate_all(&self) {
        self.positive.invalidate_all();
        if let Some(negative) = &self.negative {
            negative.invalidate_all();
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Number of verified tokens currently cached (approximate, as moka counts).
    pub fn cached_count(&self) -> u64 {
        self.positive.entry_count()
    }

    /// Runs the caches' pending maintenance now (tests and benchmarks).
    pub async fn run_pending_tasks(&self) {
        self.positive.run_pending_tasks().await;
        if let Some(negative) = &self.negative {
            negative.run_pending_tasks().await;
        }
    }
}

fn same_url(a: &str, b: &str) -> bool {
    match (Url::parse(a), Url::parse(b)) {
        (Ok(a), Ok(b)) => same_resource(&a, &b),
        _ => a == b,
    }
}

/// Resource identifiers compare exactly, except that scheme and host are case-insensitive
/// (`Url` lower-cases them) and an empty path equals `/`.
fn same_resource(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
        && a.path().trim_end_matches('/') == b.path().trim_end_matches('/')
        && a.query() == b.query()
        && a.username() == b.username()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::{ClientId, StringSet};
    use std::sync::atomic::AtomicUsize;

    /// Allows every token, for a grant issued to another resource.
    struct ForeignAudience(AtomicUsize);

    impl Gateway for ForeignAudience {
        fn check<'a>(
            &'a self,
            _request: CheckRequest<'a>,
        ) -> futures_util::future::BoxFuture<'a, Result<Decision, GatewayError>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                Ok(Decision::Allowed(Box::new(Grant {
                    client_id: ClientId::new("oc_foreign"),
                    granted_resource: None,
                    scopes: StringSet::default(),
                    permissions: StringSet::default(),
                    expires_at: SystemTime::now() + Duration::from_secs(3600),
                    oauth_resource: Some("https://other.example.com/mcp".into()),
                    issuer: None,
                    deployment_id: DeploymentId(1),
                    owner_user_id: None,
                    request_id: "req".into(),
                })))
            })
        }
    }

    #[tokio::test]
    async fn negative_cache_repeats_the_original_reason() {
        let config = WachtAuthConfig::builder()
            .expected_audience("https://api.example.com/mcp")
            .build()
            .unwrap();
        let gateway = Arc::new(ForeignAudience(AtomicUsize::new(0)));
        let verifier = Verifier::new(&config, gateway.clone(), ChallengeParams::shared_default());
        for _ in 0..3 {
            assert_eq!(
                verifier.verify("oat_token").await.unwrap_err(),
                AuthError::InvalidToken(WRONG_AUDIENCE)
            );
        }
        assert_eq!(
            gateway.0.load(Ordering::SeqCst),
            1,
            "repeats come from the negative cache"
        );
    }

    #[test]
    fn resource_comparison_is_canonical_but_strict() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(same_resource(
            &u("HTTPS://API.example.com/mcp"),
            &u("https://api.example.com/mcp")
        ));
        assert!(same_resource(
            &u("https://api.example.com"),
            &u("https://api.example.com/")
        ));
        assert!(same_resource(
            &u("https://api.example.com:443/mcp"),
            &u("https://api.example.com/mcp")
        ));
        assert!(!same_resource(
            &u("https://api.example.com/mcp"),
            &u("https://api.example.com/other")
        ));
        assert!(!same_resource(
            &u("https://api.example.com/MCP"),
            &u("https://api.example.com/mcp")
        ));
        assert!(!same_resource(
            &u("https://evil.example.com/mcp"),
            &u("https://api.example.com/mcp")
        ));
        assert!(!same_resource(
            &u("http://api.example.com/mcp"),
            &u("https://api.example.com/mcp")
        ));
    }
}
