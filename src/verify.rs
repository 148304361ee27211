//! [`Verifier`]: token → [`Principal`]. Owns the decision caches, the gateway, the pinning
//! checks and the outage policy; the layer is a thin shell over it.
//!
//! * Positive cache (moka): SHA-256 of the token → principal, served until
//!   `min(insertion + ttl, expires_at)`, with a per-thread front cache for hot tokens.
//! * Single flight: concurrent misses for one token share one gateway call (`try_get_with`).
//! * Negative cache (moka, separate and smaller): tokens the gateway rejected and why, for a
//!   short ttl, so floods of a bad token do not reach the gateway and cannot evict good entries.
//! * Errors (429, 5xx, timeouts) are never cached. By default an outage fails closed (503);
//!   `stale_if_error` opts into a bounded grace for tokens verified before.
//! * Refresh-ahead (opt-in) re-verifies hot tokens in the background before their entry ends.
//! * A deny list of OAuth client ids, changeable at run time, refuses tokens the gateway allows.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt as _;
use moka::future::Cache;
use moka::ops::compute::Op;
use reqwest::Url;
use tracing::Instrument as _;

use crate::cache::{DigestHasher, Entry, Generations, Interner, Refresh, front_get, front_put, weight};
use crate::config::WachtAuthConfig;
use crate::gateway::{CheckRequest, Decision, Gateway, GatewayError};
use crate::principal::{ClientId, DeploymentId, Grant, Principal, StringSet};
use crate::reject::{AuthError, ChallengeParams};
use crate::telemetry::{self, Metrics};
use crate::token::{BearerToken, OwnedBearer, TokenHash, parse_token};

const REJECTED: &str = "The access token is invalid, expired or revoked.";
const WRONG_DEPLOYMENT: &str = "The access token was issued by another deployment.";
const WRONG_ISSUER: &str = "The access token was issued by another issuer.";
const WRONG_AUDIENCE: &str = "The access token was not issued for this resource.";
const DENIED_CLIENT: &str = "The OAuth client of this access token is not allowed here.";
/// Used when the gateway rate-limits without saying for how long.
const DEFAULT_RATE_LIMIT_RETRY: Duration = Duration::from_secs(60);

/// Distinguishes verifiers in the per-thread front cache (one cache per check profile).
static NEXT_VERIFIER_ID: AtomicU64 = AtomicU64::new(1);

/// The outcome of a miss that must not be cached, shared by every request that waited on it.
enum Uncached {
    /// Allowed, but not cacheable (already expired by our clock).
    Allowed(Principal),
    Rejected(AuthError),
}

/// A principal kept for the outage grace, and until when it may be served.
#[derive(Clone)]
struct StaleEntry {
    principal: Principal,
    until: Instant,
    /// The generation stamp of the answer it was made from.
    stamp: u64,
}

/// More rounds than this of answers voided while in flight, and a miss gives up (503).
const MAX_ROUNDS: usize = 3;

/// A cache hit on the request path.
pub(crate) struct Hit {
    pub(crate) principal: Principal,
    /// Set when this request should start the background refresh (refresh-ahead).
    pub(crate) refresh: Option<Arc<Refresh>>,
}

/// Verifies tokens for one check profile (gateway, method, resource, pinning). Cheap to share
/// behind an `Arc`; every [`WachtAuthLayer`](crate::WachtAuthLayer) clone uses the same one.
pub struct Verifier {
    id: u64,
    gateway: Arc<dyn Gateway>,
    positive: Cache<TokenHash, Entry, DigestHasher>,
    /// Rejected tokens and why, so a repeat gets the same `error_description`.
    negative: Option<Cache<TokenHash, &'static str, DigestHasher>>,
    /// Principals kept past their entry for the outage grace (`stale_if_error`).
    stale: Option<(Cache<TokenHash, StaleEntry, DigestHasher>, Duration)>,
    refresh_ahead: Option<Duration>,
    denied_clients: RwLock<HashSet<Arc<str>>>,
    interner: Interner,
    metrics: Metrics,
    /// What invalidations have voided; every answer is stamped with its generation.
    generations: Generations,
    /// Gateway calls in flight now, and the most allowed at once.
    inflight: AtomicUsize,
    max_inflight: usize,
    /// Longest a gateway call may take, whatever the [`Gateway`] implementation does.
    call_bound: Duration,
    method: String,
    resource: String,
    ttl: Duration,
    max_token_len: usize,
    expected_deployment_id: Option<DeploymentId>,
    expected_issuer: Option<String>,
    expected_audience: Option<Url>,
    unavailable_retry_after: Duration,
    pub(crate) forward_user_agent: bool,
    pub(crate) client_ip: Option<crate::config::ClientIpFn>,
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

/// The least weight of a cached principal, so that `max_capacity` entries fill the byte budget.
fn min_weight(config: &WachtAuthConfig) -> u64 {
    (config.max_cache_bytes / config.max_capacity.max(1)).max(1)
}

fn positive_cache(config: &WachtAuthConfig, ttl: Duration) -> Cache<TokenHash, Entry, DigestHasher> {
    let min_weight = min_weight(config);
    let builder = Cache::builder()
        // Weighed in estimated bytes (at least budget / max_capacity each): both bounds hold.
        .max_capacity(config.max_cache_bytes)
        .weigher(move |_key, entry: &Entry| weight(&entry.principal, min_weight))
        // A flat ttl; an entry whose token expires sooner is never served past its `deadline`
        // (checked on every read). Measured: per-entry `Expiry` costs ~40 B per entry for no
        // behaviour we need.
        .time_to_live(ttl)
        .support_invalidation_closures();
    #[cfg(feature = "metrics")]
    let builder = builder.eviction_listener(|_key, _value, cause| {
        use moka::notification::RemovalCause;
        telemetry::eviction(match cause {
            RemovalCause::Expired => "expired",
            RemovalCause::Size => "size",
            RemovalCause::Explicit => "explicit",
            RemovalCause::Replaced => "replaced",
        });
    });
    builder.build_with_hasher(DigestHasher)
}

impl Verifier {
    /// Builds a verifier over any gateway.
    pub fn new(config: &WachtAuthConfig, gateway: Arc<dyn Gateway>, challenge: Arc<ChallengeParams>) -> Self {
        let positive = positive_cache(config, config.ttl);
        let negative = (!config.negative_ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(config.negative_max_capacity)
                .time_to_live(config.negative_ttl)
                .build_with_hasher(DigestHasher)
        });
        let min_weight = min_weight(config);
        let stale = config.stale_if_error.map(|grace| {
            let cache = Cache::builder()
                .max_capacity(config.max_cache_bytes)
                .weigher(move |_key, entry: &StaleEntry| weight(&entry.principal, min_weight))
                .time_to_live(config.ttl + grace)
                .support_invalidation_closures()
                .build_with_hasher(DigestHasher);
            (cache, grace)
        });
        let denied = config.denied_clients.iter().map(|c| Arc::from(c.as_str())).collect();
        Verifier {
            id: NEXT_VERIFIER_ID.fetch_add(1, Ordering::Relaxed),
            gateway,
            positive,
            negative,
            stale,
            refresh_ahead: config.refresh_ahead.map(|w| w.min(config.ttl)),
            denied_clients: RwLock::new(denied),
            interner: Interner::default(),
            metrics: Metrics::new(),
            // A record matters while an answer stamped before it can still be cached: the
            // longest gateway call, then the entry's ttl and outage grace, with a margin.
            generations: Generations::new(
                call_bound(config) + config.ttl + config.stale_if_error.unwrap_or_default() + Duration::from_secs(5),
            ),
            inflight: AtomicUsize::new(0),
            max_inflight: config.max_inflight_gateway_calls,
            call_bound: call_bound(config),
            method: config.method.clone(),
            resource: config.resource.clone(),
            ttl: config.ttl,
            max_token_len: config.max_token_len,
            expected_deployment_id: config.expected_deployment_id,
            expected_issuer: config.expected_issuer.clone(),
            expected_audience: config.expected_audience.as_deref().and_then(|a| Url::parse(a).ok()),
            unavailable_retry_after: config.unavailable_retry_after,
            forward_user_agent: config.forward_user_agent,
            client_ip: config.client_ip.clone(),
            challenge,
        }
    }

    /// Verifies a raw token (without the `Bearer ` prefix), through the cache. For callers
    /// outside HTTP (WebSocket upgrades, queues); the layer uses the same path.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let token = parse_token(token.as_bytes(), self.max_token_len)
            .map_err(|_| AuthError::InvalidToken("The access token is malformed."))?;
        if token.is_jwt_shaped() {
            return Err(AuthError::InvalidToken(
                "JWT access tokens are not accepted by this server.",
            ));
        }
        let hash = token.hash();
        if let Some(hit) = self.lookup(&hash) {
            return Ok(hit.principal);
        }
        self.verify_miss(token, hash, MissContext::default()).await
    }

    /// The cached principal for a token hash, if present and fresh, without calling the
    /// gateway or waiting.
    pub fn cached(&self, hash: &TokenHash) -> Option<Principal> {
        self.lookup(hash).map(|hit| hit.principal)
    }

    /// The hot path: this thread's front cache, then the shared cache.
    pub(crate) fn lookup(&self, hash: &TokenHash) -> Option<Hit> {
        let generation = self.generations.current();
        let now = Instant::now();
        let entry = match front_get(self.id, generation, hash, now) {
            Some(entry) => entry,
            None => {
                // moka's `get` completes on its first poll unless it must wait for maintenance;
                // if it would wait, the miss path asks again properly.
                let entry = self
                    .positive
                    .get(hash)
                    .now_or_never()
                    .flatten()
                    .filter(|e| now < e.deadline && self.is_current(hash, e));
                let Some(entry) = entry else {
                    self.metrics.cache_miss();
                    return None;
                };
                front_put(self.id, generation, *hash, entry.clone());
                entry
            }
        };
        self.metrics.cache_hit();
        tracing::trace!(
            client_id = entry.principal.client_id().as_str(),
            cache = "hit",
            outcome = "allowed"
        );
        let refresh = entry.refresh_due(now).cloned();
        Some(Hit {
            principal: entry.principal,
            refresh,
        })
    }

    /// The miss path: negative cache, then one gateway call per token however many wait.
    pub(crate) async fn verify_miss(
        &self,
        token: BearerToken<'_>,
        hash: TokenHash,
        ctx: MissContext,
    ) -> Result<Principal, AuthError> {
        // A few rounds at most: another only if the answer found is unusable, because it
        // ended (a token that expired before the cache ttl) or because an invalidation voided
        // it while it was in flight. The caller has just looked in the positive cache
        // (`lookup`); `try_get_with` below returns an entry stored since then.
        for _ in 0..MAX_ROUNDS {
            if let Some(negative) = &self.negative
                && let Some(reason) = negative.get(&hash).await
            {
                tracing::debug!(token = ?hash, cache = "negative", outcome = "invalid_token", "token rejected from the negative cache");
                telemetry::verification("invalid_token", "negative_cache");
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
            let result = self.positive.try_get_with(hash, init).await;
            // Read before the entry is judged: the front cache keeps it only while no
            // invalidation has happened since.
            let generation = self.generations.current();
            let outcome = match result {
                Ok(entry) if Instant::now() >= entry.deadline || !self.is_current(&hash, &entry) => {
                    // Ended, or voided by an invalidation while its gateway call was in
                    // flight (the answer may predate a revocation): ask again.
                    self.remove_if_unusable(hash).await;
                    continue;
                }
                Ok(entry) => {
                    front_put(self.id, generation, hash, entry.clone());
                    self.remember_stale(hash, &entry).await;
                    Ok(entry.principal)
                }
                Err(shared) => match &*shared {
                    Uncached::Allowed(p) => Ok(p.clone()),
                    Uncached::Rejected(AuthError::Unavailable { retry_after }) => match self.serve_stale(&hash).await {
                        Some(p) => {
                            telemetry::verification("allowed_stale", "stale");
                            return Ok(p);
                        }
                        None => Err(AuthError::Unavailable {
                            retry_after: *retry_after,
                        }),
                    },
                    Uncached::Rejected(e) => Err(e.clone()),
                },
            };
            telemetry::verification(outcome_label(&outcome), "gateway");
            return outcome;
        }
        // Only reached if every answer was unusable: fail closed.
        Err(AuthError::Unavailable {
            retry_after: self.unavailable_retry_after,
        })
    }

    /// True unless an invalidation voided the entry's answer after its gateway call started.
    fn is_current(&self, hash: &TokenHash, entry: &Entry) -> bool {
        self.generations
            .is_current(hash, entry.principal.client_id().as_str(), entry.stamp)
    }

    /// Removes the token's entry if it is past its deadline or voided, atomically: a fresh
    /// answer that another request stored after ours was read stays.
    async fn remove_if_unusable(&self, hash: TokenHash) {
        self.positive
            .entry(hash)
            .and_compute_with(|current| {
                std::future::ready(match current {
                    Some(entry)
                        if Instant::now() >= entry.value().deadline || !self.is_current(&hash, entry.value()) =>
                    {
                        Op::Remove
                    }
                    _ => Op::Nop,
                })
            })
            .await;
    }

    /// Starts a background re-verification of a cached token (refresh-ahead), if a Tokio
    /// runtime is running. `refresh` must have been claimed by the caller.
    pub(crate) fn spawn_refresh(self: &Arc<Self>, token: OwnedBearer, hash: TokenHash, ctx: MissContext) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = Arc::clone(self);
        runtime.spawn(async move {
            let span = tracing::debug_span!("wacht.refresh", token = ?hash, client_id = tracing::field::Empty, outcome = tracing::field::Empty, gateway_ms = tracing::field::Empty);
            this.refresh(token.token(), hash, ctx).instrument(span).await;
        });
    }

    async fn refresh(&self, token: BearerToken<'_>, hash: TokenHash, ctx: MissContext) {
        match self.ask_gateway(token, hash, &ctx).await {
            Ok(entry) => {
                // An answer voided while in flight is not stored; one voided after the insert
                // is never read (every read checks its stamp).
                if self.is_current(&hash, &entry) {
                    self.positive.insert(hash, entry.clone()).await;
                    self.remember_stale(hash, &entry).await;
                }
                telemetry::refresh("allowed");
            }
            Err(Uncached::Rejected(AuthError::InvalidToken(_))) => {
                // Revoked (or now failing a pin) while cached: stop serving it everywhere now.
                self.generations.invalidate_token(hash);
                self.positive.invalidate(&hash).await;
                telemetry::refresh("invalid_token");
            }
            // Rate limited, unavailable: keep the entry until its deadline; the next miss asks.
            Err(_) => telemetry::refresh("failed"),
        }
    }

    async fn ask_gateway(&self, token: BearerToken<'_>, hash: TokenHash, ctx: &MissContext) -> Result<Entry, Uncached> {
        // Inside the single flight: a flight that just ended may have rejected this token after
        // our caller looked at the negative cache. Look again rather than ask twice.
        if let Some(negative) = &self.negative
            && let Some(reason) = negative.get(&hash).await
        {
            return Err(Uncached::Rejected(AuthError::InvalidToken(reason)));
        }
        // A flood of unseen tokens must not pile up calls on the gateway: past the cap, refuse
        // at once (503) rather than queue.
        let Some(_permit) = InflightPermit::acquire(&self.inflight, self.max_inflight) else {
            tracing::debug!(token = ?hash, limit = self.max_inflight, "gateway calls at their limit: refused");
            telemetry::verification("unavailable", "overload");
            return Err(Uncached::Rejected(AuthError::Unavailable {
                retry_after: self.unavailable_retry_after,
            }));
        };
        // Stamped before the call: an invalidation from now on voids this answer.
        let stamp = self.generations.current();
        let request = CheckRequest {
            token,
            method: &self.method,
            resource: &self.resource,
            client_ip: ctx.client_ip.as_deref(),
            user_agent: ctx.user_agent.as_deref(),
        };
        let started = Instant::now();
        let decision = self.bounded(self.gateway.check(request)).await;
        let elapsed = started.elapsed();
        telemetry::gateway_call(elapsed, decision.as_ref().err().map(GatewayError::kind));
        let span = tracing::Span::current();
        span.record("gateway_ms", elapsed.as_secs_f64() * 1000.0);
        let outcome = self.decide(decision, hash, stamp).await;
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
                span.record("outcome", error_label(e));
            }
        }
        tracing::debug!("gateway check finished");
        outcome
    }

    /// A gateway call cut off at the call bound (a custom [`Gateway`] that never answers
    /// fails closed like a timeout), when a Tokio timer is available.
    async fn bounded(
        &self,
        call: futures_util::future::BoxFuture<'_, Result<Decision, GatewayError>>,
    ) -> Result<Decision, GatewayError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return call.await;
        }
        tokio::time::timeout(self.call_bound, call)
            .await
            .unwrap_or(Err(GatewayError::Timeout))
    }

    async fn decide(
        &self,
        decision: Result<Decision, GatewayError>,
        hash: TokenHash,
        stamp: u64,
    ) -> Result<Entry, Uncached> {
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
            telemetry::foreign_failure("pinning");
            return Err(self.reject_and_remember(hash, reason).await);
        }
        if self.is_denied(grant.client_id.as_str()) {
            tracing::info!(
                client_id = grant.client_id.as_str(),
                "token of a denied OAuth client rejected"
            );
            telemetry::failure(grant.client_id.as_str(), "denied_client");
            return Err(self.reject_and_remember(hash, DENIED_CLIENT).await);
        }
        let remaining = grant
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let principal = Principal::new(self.intern(*grant), Arc::clone(&self.challenge));
        if remaining.is_zero() {
            return Err(Uncached::Allowed(principal));
        }
        let now = Instant::now();
        let lifetime = self.ttl.min(remaining);
        // Refresh only entries that end because of the ttl: a token about to expire cannot be
        // renewed by asking again.
        let refresh = self
            .refresh_ahead
            .filter(|_| remaining > self.ttl)
            .map(|window| Arc::new(Refresh::new(now + lifetime.saturating_sub(window))));
        Ok(Entry {
            principal,
            deadline: now + lifetime,
            stamp,
            refresh,
        })
    }

    /// Keeps a verified principal for the outage grace.
    async fn remember_stale(&self, hash: TokenHash, entry: &Entry) {
        let Some((stale, grace)) = &self.stale else {
            return;
        };
        let now_wall = SystemTime::now();
        let token_left = entry
            .principal
            .expires_at()
            .duration_since(now_wall)
            .unwrap_or(Duration::ZERO);
        let until = (entry.deadline + *grace).min(Instant::now() + token_left);
        stale
            .insert(
                hash,
                StaleEntry {
                    principal: entry.principal.clone(),
                    until,
                    stamp: entry.stamp,
                },
            )
            .await;
    }

    /// A principal verified before, still inside the outage grace and not denied since.
    async fn serve_stale(&self, hash: &TokenHash) -> Option<Principal> {
        let (stale, _) = self.stale.as_ref()?;
        let entry = stale.get(hash).await?;
        let client_id = entry.principal.client_id().as_str();
        let fresh_enough = Instant::now() < entry.until && SystemTime::now() < entry.principal.expires_at();
        if !fresh_enough || self.is_denied(client_id) || !self.generations.is_current(hash, client_id, entry.stamp) {
            return None;
        }
        tracing::warn!(
            client_id = entry.principal.client_id().as_str(),
            "gateway unavailable: serving a previously verified token (stale_if_error)"
        );
        telemetry::stale_served();
        Some(entry.principal)
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

    /// A token refused for good (the gateway's 401, a pin, a denied client): remembered in the
    /// negative cache, and dropped from the outage grace so an outage cannot bring it back.
    async fn reject_and_remember(&self, hash: TokenHash, reason: &'static str) -> Uncached {
        if let Some(negative) = &self.negative {
            negative.insert(hash, reason).await;
        }
        if let Some((stale, _)) = &self.stale {
            stale.invalidate(&hash).await;
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

    fn is_denied(&self, client_id: &str) -> bool {
        let denied = self
            .denied_clients
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        !denied.is_empty() && denied.contains(client_id)
    }

    /// Drops one token from the caches (and the outage grace), so its next use asks the
    /// gateway again. Use it when you learn that a grant was revoked.
    pub async fn invalidate(&self, token: &str) {
        let hash = TokenHash::of(token);
        // First: from here on, no answer obtained before counts, wherever it is stored.
        self.generations.invalidate_token(hash);
        self.positive.invalidate(&hash).await;
        if let Some(negative) = &self.negative {
            negative.invalidate(&hash).await;
        }
        if let Some((stale, _)) = &self.stale {
            stale.invalidate(&hash).await;
        }
    }

    /// Drops every cached decision.
    pub fn invalidate_all(&self) {
        self.generations.invalidate_all();
        self.positive.invalidate_all();
        if let Some(negative) = &self.negative {
            negative.invalidate_all();
        }
        if let Some((stale, _)) = &self.stale {
            stale.invalidate_all();
        }
    }

    /// Drops every cached token of one OAuth client, so their next use asks the gateway.
    /// (The gateway still allows a deactivated client's tokens: to refuse them, use
    /// [`deny_client`](Self::deny_client).)
    pub fn invalidate_client(&self, client_id: &str) {
        self.generations.invalidate_client(client_id);
        let id: Arc<str> = Arc::from(client_id);
        let matches = move |_: &TokenHash, principal: &Principal| principal.client_id().as_str() == &*id;
        let m = matches.clone();
        let positive_ok = self
            .positive
            .invalidate_entries_if(move |k, e| m(k, &e.principal))
            .is_ok();
        let stale_ok = match &self.stale {
            Some((stale, _)) => stale
                .invalidate_entries_if(move |k, e| matches(k, &e.principal))
                .is_ok(),
            None => true,
        };
        if !(positive_ok && stale_ok) {
            // Cannot happen (closures are enabled at construction); stay correct regardless.
            self.positive.invalidate_all();
            if let Some((stale, _)) = &self.stale {
                stale.invalidate_all();
            }
        }
    }

    /// Refuses every token of `client_id` from now on (401 `invalid_token`), even when the
    /// gateway allows it, and drops its cached tokens at once. Takes effect on every thread
    /// before this returns.
    pub fn deny_client(&self, client_id: &str) {
        self.denied_clients
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(Arc::from(client_id));
        self.invalidate_client(client_id);
        // Tokens of this client remembered as rejected for another reason stay rejected; new
        // ones reach `decide`, which now refuses them.
    }

    /// Lifts a [`deny_client`](Self::deny_client). Its tokens rejected within the last
    /// `negative_ttl` stay rejected until that entry ends.
    pub fn allow_client(&self, client_id: &str) {
        self.denied_clients
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(client_id);
    }

    /// The OAuth client ids currently denied.
    pub fn denied_clients(&self) -> Vec<String> {
        let denied = self
            .denied_clients
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut ids: Vec<String> = denied.iter().map(|c| c.to_string()).collect();
        ids.sort();
        ids
    }

    /// Number of verified tokens currently cached (approximate, as moka counts).
    pub fn cached_count(&self) -> u64 {
        self.positive.entry_count()
    }

    /// The decision cache's weighted size (approximate, as moka counts): the estimated bytes of
    /// the cached principals, each counted as at least `max_cache_bytes / max_capacity`, so it
    /// never exceeds [`max_cache_bytes`](crate::WachtAuthConfigBuilder::max_cache_bytes).
    pub fn cached_bytes(&self) -> u64 {
        self.positive.weighted_size()
    }

    /// Number of rejected tokens currently remembered (approximate).
    pub fn negative_count(&self) -> u64 {
        self.negative.as_ref().map_or(0, |n| n.entry_count())
    }

    /// Runs the caches' pending maintenance now (tests and benchmarks).
    pub async fn run_pending_tasks(&self) {
        self.positive.run_pending_tasks().await;
        if let Some(negative) = &self.negative {
            negative.run_pending_tasks().await;
        }
        if let Some((stale, _)) = &self.stale {
            stale.run_pending_tasks().await;
        }
    }
}

/// The longest a gateway call may take: the configured request timeout (which bounds
/// [`HttpGateway`](crate::HttpGateway)'s whole exchange) and a second of slack.
fn call_bound(config: &WachtAuthConfig) -> Duration {
    config.request_timeout + Duration::from_secs(1)
}

/// One gateway call in flight, counted against the verifier's cap until dropped.
struct InflightPermit<'a>(&'a AtomicUsize);

impl<'a> InflightPermit<'a> {
    fn acquire(inflight: &'a AtomicUsize, max: usize) -> Option<Self> {
        inflight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| InflightPermit(inflight))
    }
}

impl Drop for InflightPermit<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn error_label(e: &AuthError) -> &'static str {
    match e {
        AuthError::RateLimited { .. } => "rate_limited",
        AuthError::Unavailable { .. } => "unavailable",
        other => other.error_code().unwrap_or("invalid_token"),
    }
}

fn outcome_label(outcome: &Result<Principal, AuthError>) -> &'static str {
    match outcome {
        Ok(_) => "allowed",
        Err(e) => error_label(e),
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
            .expected_deployment_id(1)
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
