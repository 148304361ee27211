//! [`Verifier`]: token → [`Principal`]. It owns the whole decision: the cache tiers, the
//! miss path and its gateway call, the pins and the deny list, refresh-ahead and the outage
//! policy. The layer parses the header and asks [`Verifier::authenticate`]; it never touches
//! the network or the cache.
//!
//! * [`miss`]: the single-flight miss path, the cap on calls in flight, the call itself.
//! * [`source`]: where a verdict comes from: the gateway (through the fleet's shared tier in
//!   fleet mode) for opaque tokens, [`jwt`](crate::jwt) verification for JWTs.
//! * [`decide`]: a verdict → a cache entry or a refusal, through the pins and the deny list.
//! * [`changes`]: invalidations and denials, here and through the fleet.
//! * [`revoked`]: the JWT session and token-id denials.
//! * [`refresh`]: refresh-ahead in the background.
//! * [`stream`]: what a streamed response asks, later, about its caller.

mod changes;
mod decide;
#[cfg(feature = "redis")]
mod fleet;
mod metered;
mod miss;
mod refresh;
mod revoked;
mod source;
mod stream;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use http::Request;

use self::decide::{DenyList, Pins};
use self::miss::MissContext;
use self::revoked::RevokedIds;
pub(crate) use self::stream::{StreamPass, Ticket, register};
use crate::cache::DecisionCache;
use crate::config::{GatewaySettings, WachtAuthConfig};
use crate::error::ConfigError;
use crate::gateway::{Gateway, HttpGateway};
use crate::principal::Principal;
use crate::reject::{AuthError, ChallengeParams, InvalidTokenReason};
use crate::token::{BearerToken, Credential, OwnedBearer, TokenHash, parse_token};

/// What [`Verifier::authenticate`] found for a request's token. The rare cases are boxed,
/// so the hit path moves nothing large (a principal, its stream's ticket, its rate-limit
/// budget).
pub(crate) enum Authentication {
    /// A cached principal: serve it now.
    Hit(Served),
    /// Refused with 429 here: a rate-limit budget is spent (the budget for the headers).
    Spent(Box<crate::rate_limit::Usage>),
    /// Not cached: verify it with [`Miss::verify`].
    Miss(Box<Miss>),
    /// Refused without asking anyone.
    Refused(Box<AuthError>),
}

/// A request served from cache.
pub(crate) struct Served {
    pub(crate) principal: Principal,
    /// For its response, if streamed.
    pub(crate) pass: StreamPass,
    /// The budget its response reports, when a rate limit applies.
    pub(crate) usage: Option<crate::rate_limit::Usage>,
    /// Which tier had it (the audit trail's source).
    pub(crate) source: crate::audit::DecisionSource,
}

/// A principal verified on a miss, and the budget its response reports.
pub(crate) struct Verified {
    pub(crate) principal: Principal,
    pub(crate) usage: Option<crate::rate_limit::Usage>,
    /// Where the verdict came from, when not from a verification of the request's own
    /// kind (see [`MissNotes::source`](miss::MissNotes)).
    pub(crate) source: Option<crate::audit::DecisionSource>,
}

/// A miss's refusal, and for a 429 the budget the gateway's answer named (its response's
/// rate-limit headers; `None`: the meters', if they know the route).
pub(crate) struct Refused {
    pub(crate) error: AuthError,
    pub(crate) usage: Option<crate::rate_limit::Usage>,
    /// As [`Verified::source`].
    pub(crate) source: Option<crate::audit::DecisionSource>,
}

/// How fresh an answer a layer takes (see [`WachtAuthLayer::always_live`](crate::WachtAuthLayer::always_live)
/// and [`WachtAuthLayer::max_cache_age`](crate::WachtAuthLayer::max_cache_age)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Any answer the cache tiers hold.
    Cached,
    /// Only an answer verified at most this long ago.
    MaxAge(Duration),
    /// Every request asks the gateway (a JWT: verified again locally).
    Live,
}

/// A token the cache did not have, and the request context its verification sends.
pub(crate) struct Miss {
    freshness: Freshness,
    verifier: Arc<Verifier>,
    hash: TokenHash,
    ctx: MissContext,
    started: Instant,
    /// The generation when the request began (its stream's [`Ticket`]).
    stamp: u64,
    /// A cached credential on a route its meters have not seen: the gateway is asked (and
    /// counts it), and teaches these meters the route's rules.
    learn: Option<Arc<crate::rate_limit::RouteMeters>>,
    /// A hit whose meters hold a full batch the fleet does not have: served (or refused) once
    /// the batch is added.
    waiting: Option<Box<metered::Waiting>>,
}

impl Miss {
    /// The cache tier of a hit that waits for the fleet's count (its verdict is the cache's,
    /// not a verification's); `None` for a verification.
    pub(crate) fn cached_source(&self) -> Option<crate::audit::DecisionSource> {
        self.waiting.as_ref().map(|waiting| waiting.source)
    }

    /// The verification (single flight, gateway), owning the token.
    pub(crate) fn verify(self, token: OwnedBearer) -> BoxFuture<'static, Result<Verified, Refused>> {
        if token.token().is_jwt_shaped() {
            self.verifier.start_jwks_timer();
        }
        Box::pin(async move {
            let notes = Arc::clone(&self.ctx.notes);
            let source = || notes.source.get().copied();
            match self.verified(token).await {
                Ok(mut verified) => {
                    verified.source = source();
                    Ok(verified)
                }
                Err(error) => Err(Refused {
                    usage: matches!(error, AuthError::RateLimited { .. })
                        .then(|| notes.gateway_budget.get().cloned())
                        .flatten(),
                    source: source(),
                    error,
                }),
            }
        })
    }

    /// The verification itself (see [`verify`](Self::verify)).
    async fn verified(self, token: OwnedBearer) -> Result<Verified, AuthError> {
        if let Some(waiting) = self.waiting {
            return self.verifier.after_flush(*waiting).await;
        }
        let route = self.verifier.route_key_of(&self.ctx);
        let principal = match (self.learn, self.freshness) {
            (Some(meters), _) => {
                self.verifier
                    .verify_learning(token.token(), self.hash, &self.ctx, meters)
                    .await
            }
            (None, Freshness::Live) => self.verifier.verify_live(token.token(), self.hash, &self.ctx).await,
            (None, Freshness::MaxAge(max_age)) => {
                self.verifier
                    .verify_miss_within(token.token(), self.hash, self.ctx, self.started, max_age)
                    .await
            }
            (None, Freshness::Cached) => {
                self.verifier
                    .verify_miss(token.token(), self.hash, self.ctx, self.started)
                    .await
            }
        }?;
        let usage = self.verifier.usage_after_miss(&self.hash, route.as_ref());
        Ok(Verified {
            principal,
            usage,
            source: None,
        })
    }
}

/// Verifies tokens for one check profile (gateway, route reporting, pins). Every
/// [`WachtAuthLayer`](crate::WachtAuthLayer) clone shares one; reach it with
/// [`WachtAuthLayer::verifier`](crate::WachtAuthLayer::verifier) to verify tokens outside HTTP
/// or to control the cache.
pub struct Verifier {
    cache: DecisionCache,
    gateway: Box<dyn Gateway>,
    pins: Pins,
    denied: DenyList,
    /// What a miss sends the gateway, and how hard it may be pushed.
    settings: GatewaySettings,
    /// Gateway calls in flight now.
    inflight: AtomicUsize,
    max_token_len: usize,
    challenge: Arc<ChallengeParams>,
    /// The permission implications every principal of this verifier judges with.
    hierarchy: Arc<crate::scopes::ScopeHierarchy>,
    /// The shared tier and the change log, in fleet mode.
    #[cfg(feature = "redis")]
    fleet: Option<Arc<crate::fleet::Fleet>>,
    /// Local verification of JWT access tokens, when enabled.
    jwt: Option<crate::jwt::JwtVerifier>,
    /// JWT sessions and token ids cut off on this server.
    revoked: RevokedIds,
    /// The JWKS key withdrawals already acted on (each voids the cached JWT decisions).
    key_removals_seen: AtomicU64,
    jwks_timer_started: AtomicBool,
    /// Which credentials are API keys.
    api_keys: crate::api_key::ApiKeys,
    /// Wacht's rate limits on what the cache serves; `None` when metering is off.
    metering: Option<crate::rate_limit::Metering>,
    /// Every request's resource, when it does not depend on the request (fixed reporting).
    fixed_resource: Option<String>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("route", &self.settings.route)
            .field("method", &self.settings.method)
            .field("resource", &self.settings.resource)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier checking tokens with the Wacht gateway client `config` describes.
    pub fn from_config(config: &WachtAuthConfig) -> Result<Self, ConfigError> {
        Self::with_gateway(config, HttpGateway::new(config)?)
    }

    /// A verifier over any [`Gateway`] implementation (a test double, a custom client).
    ///
    /// Fails only in fleet mode, which needs a running Tokio runtime.
    pub fn with_gateway(config: &WachtAuthConfig, gateway: impl Gateway) -> Result<Self, ConfigError> {
        let challenge = Arc::new(ChallengeParams {
            realm: config.challenge.realm.as_deref().map(Into::into),
            resource_metadata: config
                .challenge
                .resource_metadata
                .as_ref()
                .map(|m| m.well_known_url().into()),
            scopes: config
                .challenge
                .challenge_scopes
                .iter()
                .map(|s| s.as_str().into())
                .collect(),
        });
        let jwt = match &config.jwt {
            Some(jwt) => Some(crate::jwt::JwtVerifier::new(
                jwt,
                config.pins.expected_issuer.as_deref(),
                config.pins.expected_audience.as_deref(),
                config.gateway.connect_timeout,
                config.gateway.request_timeout,
            )?),
            None => None,
        };
        let defaults = crate::jwt::JwtConfig::default();
        let jwt_config = config.jwt.as_ref().unwrap_or(&defaults);
        let revoked = RevokedIds::new(
            jwt_config.session_denial_lifetime,
            jwt_config.token_id_denial_lifetime(),
        );
        #[cfg(feature = "redis")]
        let fleet = fleet::start(config)?;
        #[cfg(feature = "redis")]
        let fleet_key = fleet.as_ref().map(|fleet| {
            let fleet = Arc::clone(fleet);
            Box::new(move |meter: &str| fleet.meter_name(meter)) as crate::rate_limit::FleetKey
        });
        #[cfg(not(feature = "redis"))]
        let fleet_key = None;
        let metering =
            crate::rate_limit::Metering::new(&config.rate_limits, fleet_key, config.requests.audit.is_enabled());
        let fixed_resource = matches!(config.gateway.route, crate::config::RouteReporting::Fixed)
            .then(|| miss::fixed(&config.gateway).1);
        Ok(Verifier {
            metering,
            fixed_resource,
            #[cfg(feature = "redis")]
            fleet,
            jwt,
            revoked,
            key_removals_seen: AtomicU64::new(0),
            jwks_timer_started: AtomicBool::new(false),
            cache: DecisionCache::new(&config.cache, miss::call_bound(&config.gateway)),
            gateway: Box::new(gateway),
            pins: Pins::new(&config.pins),
            denied: DenyList::new(&config.pins.denied_clients),
            settings: config.gateway.clone(),
            inflight: AtomicUsize::new(0),
            max_token_len: config.requests.max_token_len,
            challenge,
            hierarchy: Arc::clone(&config.scope_hierarchy),
            api_keys: crate::api_key::ApiKeys::new(&config.api_keys),
        })
    }

    /// Which credential these bytes are, by the configured API-key prefixes (a JWT is an
    /// OAuth access token here: what sends it to the gateway or to the JWT verifier is its
    /// shape).
    pub(crate) fn kind_of(&self, credential: &[u8]) -> crate::principal::CredentialKind {
        self.api_keys.kind_of(credential)
    }

    /// The challenge parameters of this verifier's refusals.
    pub(crate) fn challenge(&self) -> &Arc<ChallengeParams> {
        &self.challenge
    }

    /// The decision for a request's token: a cached principal, a refusal, or a miss to verify.
    /// `req` gives the context a miss sends the gateway (its route among it), worked out on a
    /// miss (or a refresh-ahead) only: a hit reads nothing of it.
    ///
    /// The credential's alphabet is checked only when the cache does not have it: a hit means
    /// the same bytes were validated when they were verified.
    pub(crate) fn authenticate<B>(self: &Arc<Self>, credential: Credential<'_>, req: &Request<B>) -> Authentication {
        #[cfg(feature = "redis")]
        if self.fleet_refuses() {
            return Authentication::Refused(Box::new(self.unavailable()));
        }
        let hash = self.key(credential.secret_bytes());
        if let Some((hit, metered)) = self.cache.hit(&hash, |hit, meters| self.meter_hit(hit, meters, req)) {
            let usage = match metered {
                metered::Metered::Pass(usage) => {
                    self.cache.served_hit();
                    usage
                }
                metered::Metered::Spent(usage) => return Authentication::Spent(Box::new(usage)),
                metered::Metered::Learn(meters) => {
                    return self.miss(credential, hash, req, Freshness::Cached, Some(meters));
                }
                metered::Metered::Flush(waiting) => return self.wait_for_flush(hash, waiting, hit),
            };
            if let Some(refresh) = hit.refresh
                && refresh.claim()
                && let Ok(token) = credential.validate()
                && let Some(token) = OwnedBearer::copy_of(token)
            {
                // Refresh-ahead: this one request hands the token to a background
                // re-verification; it is served from the cache like every other.
                self.spawn_refresh(token, hash, MissContext::of(&self.settings, req));
            }
            return Authentication::Hit(Served {
                pass: StreamPass::new(self, hash, hit.generation),
                principal: hit.principal,
                usage,
                source: source_of(hit.tier),
            });
        }
        self.miss(credential, hash, req, Freshness::Cached, None)
    }

    /// [`authenticate`](Self::authenticate) for a layer that takes only fresh answers: a
    /// `Live` one never reads a cache tier; a `MaxAge` one reads only young entries.
    pub(crate) fn authenticate_fresh<B>(
        self: &Arc<Self>,
        credential: Credential<'_>,
        req: &Request<B>,
        freshness: Freshness,
    ) -> Authentication {
        #[cfg(feature = "redis")]
        if self.fleet_refuses() {
            return Authentication::Refused(Box::new(self.unavailable()));
        }
        let hash = self.key(credential.secret_bytes());
        if let Freshness::MaxAge(max_age) = freshness
            && let Some((hit, metered)) = self
                .cache
                .hit_within(&hash, max_age, |hit, meters| self.meter_hit(hit, meters, req))
        {
            let usage = match metered {
                metered::Metered::Pass(usage) => {
                    self.cache.served_hit();
                    usage
                }
                metered::Metered::Spent(usage) => return Authentication::Spent(Box::new(usage)),
                metered::Metered::Learn(meters) => return self.miss(credential, hash, req, freshness, Some(meters)),
                metered::Metered::Flush(waiting) => return self.wait_for_flush(hash, waiting, hit),
            };
            // Refresh-ahead is the plain layers' business.
            return Authentication::Hit(Served {
                pass: StreamPass::new(self, hash, hit.generation),
                principal: hit.principal,
                usage,
                source: source_of(hit.tier),
            });
        }
        self.miss(credential, hash, req, freshness, None)
    }

    /// A hit whose meters wait for the fleet's count: served once it is added.
    fn wait_for_flush(
        self: &Arc<Self>,
        hash: TokenHash,
        mut waiting: Box<metered::Waiting>,
        hit: crate::cache::Hit,
    ) -> Authentication {
        waiting.principal = Some(hit.principal);
        Authentication::Miss(Box::new(Miss {
            freshness: Freshness::Cached,
            verifier: Arc::clone(self),
            hash,
            ctx: MissContext::without_request(&self.settings),
            started: Instant::now(),
            stamp: hit.generation,
            learn: None,
            waiting: Some(waiting),
        }))
    }

    /// A token to verify (its alphabet and form checked first).
    fn miss<B>(
        self: &Arc<Self>,
        credential: Credential<'_>,
        hash: TokenHash,
        req: &Request<B>,
        freshness: Freshness,
        learn: Option<Arc<crate::rate_limit::RouteMeters>>,
    ) -> Authentication {
        let Ok(token) = credential.validate() else {
            return Authentication::Refused(Box::new(AuthError::InvalidToken(InvalidTokenReason::Malformed)));
        };
        if let Err(refusal) = self.acceptable(token) {
            return Authentication::Refused(Box::new(refusal));
        }
        Authentication::Miss(Box::new(Miss {
            freshness,
            verifier: Arc::clone(self),
            hash,
            ctx: MissContext::of(&self.settings, req),
            started: Instant::now(),
            stamp: self.cache.stamp(),
            learn,
            waiting: None,
        }))
    }

    /// Verifies a raw token (without the `Bearer ` prefix), through the cache. For callers
    /// outside HTTP (WebSocket upgrades, queues); the layer uses the same path. Without a
    /// request there is no route: a miss reports the fixed
    /// [`method`](crate::WachtAuthConfigBuilder::method) and
    /// [`resource`](crate::WachtAuthConfigBuilder::resource) (default `GET` `/`), whatever the
    /// reporting mode.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let started = Instant::now();
        let token = parse_token(token.as_bytes(), self.max_token_len)
            .map_err(|_| AuthError::InvalidToken(InvalidTokenReason::Malformed))?;
        #[cfg(feature = "redis")]
        if self.fleet_refuses() {
            return Err(self.unavailable());
        }
        let hash = self.key(token.secret_bytes());
        if let Some((hit, ())) = self.cache.hit(&hash, |_, _| ()) {
            self.cache.served_hit();
            return Ok(hit.principal);
        }
        self.acceptable(token)?;
        self.verify_miss(token, hash, MissContext::without_request(&self.settings), started)
            .await
    }

    /// Refuses a token that can never pass, without a gateway call.
    fn acceptable(&self, token: BearerToken<'_>) -> Result<(), AuthError> {
        if self.api_keys.kind_of(token.secret_bytes()) == crate::principal::CredentialKind::ApiKey {
            // The gateway refuses a key of another form without a lookup: so do we.
            return if crate::api_key::well_formed(token.secret_bytes()) {
                Ok(())
            } else {
                Err(AuthError::InvalidToken(InvalidTokenReason::Malformed))
            };
        }
        if token.is_jwt_shaped() && self.jwt.is_none() {
            // The gateway answers 401 for every JWT access token: never send it one.
            return Err(AuthError::InvalidToken(InvalidTokenReason::JwtNotAccepted));
        }
        Ok(())
    }

    /// The cache key of a token: its SHA-256, or in fleet mode HMAC-SHA256 with the fleet
    /// secret (so that no shared store ever sees a plain hash of the token).
    pub fn hash_token(&self, token: &str) -> TokenHash {
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            return fleet.hash_str(token);
        }
        TokenHash::of(token)
    }

    /// [`hash_token`](Self::hash_token) of a token's bytes.
    fn key(&self, token: &[u8]) -> TokenHash {
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            return fleet.hash(token);
        }
        TokenHash::of_bytes(token)
    }

    /// The cached principal for a token key (see [`hash_token`](Self::hash_token)), if
    /// present and fresh, without calling the gateway or waiting.
    pub fn cached(&self, hash: &TokenHash) -> Option<Principal> {
        self.cache.peek(hash)
    }

    /// Number of verified tokens currently cached (approximate, as moka counts).
    pub fn cached_count(&self) -> u64 {
        self.cache.cached_count()
    }

    /// The decision cache's weighted size (approximate, as moka counts): the estimated bytes of
    /// the cached principals, each counted as at least `max_cache_bytes / max_capacity`, so it
    /// never exceeds [`max_cache_bytes`](crate::WachtAuthConfigBuilder::max_cache_bytes).
    pub fn cached_bytes(&self) -> u64 {
        self.cache.cached_bytes()
    }

    /// Number of rejected tokens currently remembered (approximate).
    pub fn negative_count(&self) -> u64 {
        self.cache.negative_count()
    }

    /// Runs the caches' pending maintenance now (tests and benchmarks).
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// `Retry-After` of a 503.
    fn unavailable(&self) -> AuthError {
        AuthError::Unavailable {
            retry_after: self.settings.unavailable_retry_after,
        }
    }
}

/// The audit trail's source of a hit in this tier.
fn source_of(tier: crate::cache::HitTier) -> crate::audit::DecisionSource {
    match tier {
        crate::cache::HitTier::Front => crate::audit::DecisionSource::Front,
        crate::cache::HitTier::Shared => crate::audit::DecisionSource::Cache,
        crate::cache::HitTier::Fleet => crate::audit::DecisionSource::Fleet,
    }
}

/// Slack added to the request timeout for the whole of a gateway call (see [`miss::call_bound`]).
const CALL_SLACK: Duration = Duration::from_secs(1);
