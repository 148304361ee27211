//! [`Verifier`]: token → [`Principal`]. It owns the whole decision: the cache tiers, the
//! miss path and its gateway call, the pins and the deny list, refresh-ahead and the outage
//! policy. The layer parses the header and asks [`Verifier::authenticate`]; it never touches
//! the network or the cache.
//!
//! * [`miss`]: the single-flight miss path, the cap on calls in flight, the call itself.
//! * [`source`]: where a verdict comes from: the gateway (through the fleet's shared tier in
//!   fleet mode) for opaque tokens, [`jwt`](crate::jwt) verification for JWTs.
//! * [`decide`]: a verdict → a cache entry or a refusal, through the pins and the deny list.
//! * [`refresh`]: refresh-ahead in the background.
//! * [`stream`]: what a streamed response asks, later, about its caller.

mod decide;
#[cfg(feature = "redis")]
mod fleet;
mod miss;
mod refresh;
mod source;
mod stream;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use http::{Extensions, HeaderMap};

use self::decide::{DenyList, Pins, RevokedIds};
use self::miss::MissContext;
pub(crate) use self::stream::Ticket;
use crate::cache::DecisionCache;
use crate::config::{GatewaySettings, WachtAuthConfig};
use crate::error::ConfigError;
use crate::gateway::{Gateway, HttpGateway};
use crate::principal::Principal;
use crate::reject::{AuthError, ChallengeParams, InvalidTokenReason};
use crate::token::{BearerToken, Credential, OwnedBearer, TokenHash, parse_token};

/// What [`Verifier::authenticate`] found for a request's token. The rare cases are boxed,
/// so the hit path moves nothing large (a principal and its stream's ticket).
pub(crate) enum Authentication {
    /// A cached principal: serve it now; the ticket is for its response, if streamed.
    Hit(Principal, Ticket),
    /// Not cached: verify it with [`Miss::verify`].
    Miss(Box<Miss>),
    /// Refused without asking anyone.
    Refused(Box<AuthError>),
}

/// A token the cache did not have, and the request context its verification sends.
pub(crate) struct Miss {
    verifier: Arc<Verifier>,
    hash: TokenHash,
    ctx: MissContext,
    started: Instant,
    /// The generation when the request began (its stream's [`Ticket`]).
    stamp: u64,
}

impl Miss {
    /// The verification (single flight, gateway), owning the token.
    pub(crate) fn verify(self, token: OwnedBearer) -> BoxFuture<'static, Result<Principal, AuthError>> {
        if token.token().is_jwt_shaped() {
            self.verifier.start_jwks_timer();
        }
        Box::pin(async move {
            self.verifier
                .verify_miss(token.token(), self.hash, self.ctx, self.started)
                .await
        })
    }
}

/// Verifies tokens for one check profile (gateway, method, resource, pins). Every
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
    /// The shared tier and invalidation channel, in fleet mode.
    #[cfg(feature = "redis")]
    fleet: Option<Arc<crate::fleet::Fleet>>,
    /// Local verification of JWT access tokens, when enabled.
    jwt: Option<crate::jwt::JwtVerifier>,
    /// JWT sessions and token ids cut off on this server.
    revoked: RevokedIds,
    /// The JWKS key withdrawals already acted on.
    key_removals_seen: AtomicU64,
    jwks_timer_started: AtomicBool,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
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
        Ok(Verifier {
            #[cfg(feature = "redis")]
            fleet: fleet::start(config)?,
            jwt,
            revoked: RevokedIds::default(),
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
        })
    }

    /// The challenge parameters of this verifier's refusals.
    pub(crate) fn challenge(&self) -> &Arc<ChallengeParams> {
        &self.challenge
    }

    /// The decision for a request's token: a cached principal, a refusal, or a miss to verify.
    /// `headers` and `extensions` give the request context a miss sends the gateway.
    ///
    /// The credential's alphabet is checked only when the cache does not have it: a hit means
    /// the same bytes were validated when they were verified.
    pub(crate) fn authenticate(
        self: &Arc<Self>,
        credential: Credential<'_>,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Authentication {
        let hash = self.key(credential.secret_bytes());
        if let Some(hit) = self.cache.hit(&hash) {
            if let Some(refresh) = hit.refresh
                && refresh.claim()
                && let Ok(token) = credential.validate()
                && let Some(token) = OwnedBearer::copy_of(token)
            {
                // Refresh-ahead: this one request hands the token to a background
                // re-verification; it is served from the cache like every other.
                self.spawn_refresh(token, hash, MissContext::of(&self.settings, headers, extensions));
            }
            return Authentication::Hit(hit.principal, Ticket::new(self, hash, hit.generation));
        }
        let Ok(token) = credential.validate() else {
            return Authentication::Refused(Box::new(AuthError::InvalidToken(InvalidTokenReason::Malformed)));
        };
        if let Err(refusal) = self.acceptable(token) {
            return Authentication::Refused(Box::new(refusal));
        }
        Authentication::Miss(Box::new(Miss {
            verifier: Arc::clone(self),
            hash,
            ctx: MissContext::of(&self.settings, headers, extensions),
            started: Instant::now(),
            stamp: self.cache.stamp(),
        }))
    }

    /// Verifies a raw token (without the `Bearer ` prefix), through the cache. For callers
    /// outside HTTP (WebSocket upgrades, queues); the layer uses the same path.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let started = Instant::now();
        let token = parse_token(token.as_bytes(), self.max_token_len)
            .map_err(|_| AuthError::InvalidToken(InvalidTokenReason::Malformed))?;
        let hash = self.key(token.secret_bytes());
        if let Some(hit) = self.cache.hit(&hash) {
            return Ok(hit.principal);
        }
        self.acceptable(token)?;
        self.verify_miss(token, hash, MissContext::default(), started).await
    }

    /// Refuses a token that can never pass, without a gateway call.
    fn acceptable(&self, token: BearerToken<'_>) -> Result<(), AuthError> {
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

    /// Drops one token's cached decision everywhere (every tier, every thread), so its next
    /// use asks the gateway again; an answer in flight is voided too. Use it when you learn
    /// that a grant was revoked.
    pub async fn invalidate(&self, token: &str) {
        let hash = self.hash_token(token);
        #[cfg(feature = "redis")]
        self.enqueue(|| crate::fleet::Event::Token(hash));
        self.cache.invalidate_token(hash).await;
        self.cache.forget_rejection(&hash).await;
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            fleet.drain(true).await;
        }
    }

    /// Drops every cached decision, answers in flight included.
    pub fn invalidate_all(&self) {
        #[cfg(feature = "redis")]
        self.enqueue(|| crate::fleet::Event::All);
        self.cache.invalidate_all();
        #[cfg(feature = "redis")]
        self.send_to_fleet();
    }

    /// Drops every cached token of one OAuth client, so their next use asks the gateway.
    /// (The gateway still allows a deactivated client's tokens: to refuse them, use
    /// [`deny_client`](Self::deny_client).)
    pub fn invalidate_client(&self, client_id: &str) {
        #[cfg(feature = "redis")]
        self.enqueue(|| crate::fleet::Event::Client(client_id.to_owned()));
        self.cache.invalidate_client(client_id);
        #[cfg(feature = "redis")]
        self.send_to_fleet();
    }

    /// Refuses every token of `client_id` from now on (401 `invalid_token`), even when the
    /// gateway allows it, and drops its cached tokens at once. Takes effect on every thread
    /// before this returns.
    pub fn deny_client(&self, client_id: &str) {
        #[cfg(feature = "redis")]
        self.enqueue(|| crate::fleet::Event::Deny(client_id.to_owned()));
        self.denied.insert(client_id);
        self.cache.invalidate_client(client_id);
        #[cfg(feature = "redis")]
        self.send_to_fleet();
    }

    /// Lifts a [`deny_client`](Self::deny_client). Its tokens rejected within the last
    /// `negative_ttl` stay rejected until that entry ends.
    pub fn allow_client(&self, client_id: &str) {
        #[cfg(feature = "redis")]
        self.enqueue(|| crate::fleet::Event::Allow(client_id.to_owned()));
        self.denied.remove(client_id);
        #[cfg(feature = "redis")]
        self.send_to_fleet();
    }

    /// Refuses every JWT of this Wacht session (`sid`) from now on (401 `invalid_token`) and
    /// drops its cached tokens at once: Wacht cannot revoke a JWT before it expires, so this
    /// is how an incident cuts a session off here. The denial lasts 24 hours (the longest a
    /// Wacht access token lives). In fleet mode it is also kept in Redis for as long and sent
    /// to the other replicas on the invalidation channel, so a replica that was disconnected,
    /// or starts later, reads it when it subscribes. Returns false if the list is full
    /// (100 000 live denials; logged).
    pub fn deny_session(&self, session_id: &str) -> bool {
        #[cfg(feature = "redis")]
        self.enqueue(|| crate::fleet::Event::DenySession(session_id.to_owned()));
        let recorded = self.revoked.deny_session(session_id);
        self.cache.invalidate_session(session_id);
        #[cfg(feature = "redis")]
        self.send_to_fleet();
        recorded
    }

    /// Refuses the JWT with this token id (`jti`) from now on and drops it from the cache;
    /// see [`deny_session`](Self::deny_session) for the duration, scope and bound.
    pub fn deny_token_id(&self, token_id: &str) -> bool {
        #[cfg(feature = "redis")]
        self.enqueue(|| crate::fleet::Event::DenyTokenId(token_id.to_owned()));
        let recorded = self.revoked.deny_token_id(token_id);
        self.cache.invalidate_token_id(token_id);
        #[cfg(feature = "redis")]
        self.send_to_fleet();
        recorded
    }

    /// The OAuth client ids currently denied, sorted.
    pub fn denied_clients(&self) -> Vec<String> {
        self.denied.list()
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

/// Slack added to the request timeout for the whole of a gateway call (see [`miss::call_bound`]).
const CALL_SLACK: Duration = Duration::from_secs(1);
