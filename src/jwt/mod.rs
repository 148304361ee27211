//! Local verification of Wacht JWT access tokens.
//!
//! A Wacht OAuth client can be set to issue JWT access tokens instead of opaque ones. The
//! gateway never sees those (it answers 401 for every one), so a server that enables
//! [`JwtConfig`] verifies them here: the RS256 signature against the issuer's JWKS, then the
//! claims, into the same [`Principal`] the gateway path produces. The
//! verified principal is cached by the token's hash like an opaque token's, so repeated use
//! costs a cache hit.
//!
//! What is checked, in order:
//!
//! 1. the JOSE header: `alg` exactly `RS256` (pinned here, never read from the token: `none`,
//!    `HS*`, `ES*`, `PS*` are refused), a `kid`, and none of `jku`, `x5u`, `jwk`, `x5c`,
//!    `x5t`, `crit` (a token never chooses its own key);
//! 2. `iss` is one of the trusted issuers, exactly;
//! 3. `exp` has not passed and `iat`/`nbf` are not in the future (both with the leeway), the
//!    lifetime is at most 24 hours (checked again after the signature; a token that fails
//!    here needs no key);
//! 4. the signature, with the issuer's key of that `kid` (an RSA key of 2048 bits or more
//!    from `<issuer>/.well-known/jwks.json`). An unknown `kid` triggers one rate-limited
//!    refresh, and is refused only against a key set fetched after the token was issued
//!    (until one exists: 503 with `Retry-After`); a key set older than `jwks_max_stale`
//!    verifies nothing (503);
//! 5. `token_use` is `access_token` (an id_token is signed by the same key), `aud` is a Wacht
//!    tenant URN (for a user URN, the user is `sub`).
//!
//! Then, as for every token whatever its format, the verifier's pins and allow lists
//! ([`allowed_clients`](crate::WachtAuthConfigBuilder::allowed_clients),
//! [`accepted_tenants`](crate::WachtAuthConfigBuilder::accepted_tenants)) and deny lists.
//!
//! Effective permissions are the scopes plus the mapping of the app's
//! [`ScopeDefinition`]s, computed as the gateway does. Unlike the gateway, nothing here knows
//! about revocation, membership or role changes after the token was issued: they were checked
//! when it was issued, and it stays valid until `exp` (Wacht cannot revoke a JWT early; use
//! [`Verifier::deny_session`](crate::Verifier::deny_session) and
//! [`deny_token_id`](crate::Verifier::deny_token_id) to cut one off on this server).

mod claims;
mod config;
mod jose;
mod jwks;
mod permissions;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::signature::ParsedPublicKey;

use self::claims::{ClaimPolicy, Claims};
use self::config::jwks_url;
pub use self::config::{
    DEFAULT_JWKS_MAX_STALE, DEFAULT_JWKS_REFRESH, DEFAULT_LEEWAY, DEFAULT_SESSION_DENIAL_LIFETIME,
    DEFAULT_UNKNOWN_KID_REFRESH, JwtConfig, MAX_LEEWAY,
};
pub(crate) use self::jwks::Cause;
use self::jwks::{Jwks, KeySetPolicy};
pub use self::permissions::ScopeDefinition;
use crate::error::ConfigError;
use crate::principal::{Grant, Principal};
use crate::reject::{AuthError, ChallengeParams, InvalidTokenReason};
use crate::telemetry;

/// Why a JWT was refused: the `reason` label of `wacht_jwt_verifications_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not three base64url segments of JSON, or a claim missing or of the wrong type.
    Malformed,
    /// `alg` other than `RS256`.
    DisallowedAlgorithm,
    /// A header member a Wacht token never has (`jku`, `jwk`, `x5c`, `crit`, ...).
    DisallowedHeader,
    /// No `kid`, or one the JWKS does not hold after a refresh.
    UnknownKey,
    /// The signature does not verify with the key.
    BadSignature,
    /// `exp` has passed.
    Expired,
    /// `iat` or `nbf` is in the future.
    NotYetValid,
    /// `exp - iat` above 24 hours.
    LifetimeTooLong,
    /// `iss` is not a trusted issuer.
    WrongIssuer,
    /// `token_use` is not `access_token` (an id_token).
    WrongTokenUse,
    /// `aud` is not a Wacht tenant URN.
    WrongAudience,
    /// A user URN audience of another user than `sub`.
    UserMismatch,
    /// The server pins its RFC 8707 resource and JWTs name a tenant.
    ResourceAudienceRequired,
}

impl Refusal {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::DisallowedAlgorithm => "disallowed_alg",
            Refusal::DisallowedHeader => "disallowed_header",
            Refusal::UnknownKey => "unknown_kid",
            Refusal::BadSignature => "bad_signature",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::LifetimeTooLong => "lifetime_too_long",
            Refusal::WrongIssuer => "wrong_issuer",
            Refusal::WrongTokenUse => "wrong_token_use",
            Refusal::WrongAudience => "wrong_audience",
            Refusal::UserMismatch => "user_mismatch",
            Refusal::ResourceAudienceRequired => "resource_audience_required",
        }
    }

    /// The 401's reason (its `error_description`): specific where that helps an honest
    /// client (expired, wrong issuer or audience), generic where it would only help forgery.
    pub(crate) fn reason(self) -> InvalidTokenReason {
        match self {
            Refusal::Malformed => InvalidTokenReason::Malformed,
            Refusal::Expired => InvalidTokenReason::Expired,
            Refusal::WrongIssuer => InvalidTokenReason::WrongIssuer,
            Refusal::WrongAudience | Refusal::UserMismatch | Refusal::ResourceAudienceRequired => {
                InvalidTokenReason::WrongAudience
            }
            Refusal::DisallowedAlgorithm
            | Refusal::DisallowedHeader
            | Refusal::UnknownKey
            | Refusal::BadSignature
            | Refusal::NotYetValid
            | Refusal::LifetimeTooLong
            | Refusal::WrongTokenUse => InvalidTokenReason::Rejected,
        }
    }
}

/// Why a JWT cannot be judged now (503, fail closed, nothing cached).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unavailable {
    /// No key set of its issuer could be loaded yet.
    NoKeySet,
    /// The issuer's key set is older than `jwks_max_stale` and no fetch succeeded since.
    KeySetExpired,
    /// Its `kid` is not in the key set, and no set was fetched after the token was signed
    /// (the unknown-`kid` fetch is rate-limited or failed): the key may have been rotated in
    /// since. `retry_after`: when an unknown `kid` may cause a fetch again.
    KeyNotFetched { retry_after: Option<Duration> },
}

impl Unavailable {
    /// The `reason` label of `wacht_jwt_verifications_total{outcome="unavailable"}`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Unavailable::NoKeySet => "no_jwks",
            Unavailable::KeySetExpired => "jwks_expired",
            Unavailable::KeyNotFetched { .. } => "kid_not_fetched",
        }
    }
}

/// Why a JWT did not become a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JwtFailure {
    /// Refused for good: 401.
    Refused(Refusal),
    /// Cannot be judged now: 503, fail closed.
    Unavailable(Unavailable),
}

impl From<Refusal> for JwtFailure {
    fn from(refusal: Refusal) -> Self {
        JwtFailure::Refused(refusal)
    }
}

impl From<Unavailable> for JwtFailure {
    fn from(why: Unavailable) -> Self {
        JwtFailure::Unavailable(why)
    }
}

/// A verified JWT's grant, and how much longer the key set that verified it may be trusted
/// (its cache entry must not outlive it).
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) grant: Grant,
    pub(crate) keys_valid_for: Duration,
}

/// The grant of a parsed token once its signature verifies with `key`, and its claims with
/// the policy.
fn signed_grant(
    jws: &jose::Jws<'_>,
    claims: Claims,
    key: &ParsedPublicKey,
    policy: &ClaimPolicy,
) -> Result<Grant, Refusal> {
    key.verify_sig(jws.signing_input, &jws.signature)
        .map_err(|_| Refusal::BadSignature)?;
    claims.into_grant(policy, SystemTime::now())
}

/// One JWT checked against a fixed key set, with no cache, no network and no `Verifier`:
/// every step of [`jwt`](self) verification, synchronously. It is the entry point of the
/// `jwt` fuzz target and the verify-on-every-request baseline of the benchmarks; a server
/// uses [`JwtConfig`] through the layer instead. The allow lists are the verifier's, not a JWT
/// rule: they are not applied here (nor the deprecated `JwtConfig` aliases of them).
#[doc(hidden)]
pub struct StaticJwtVerifier {
    issuer: String,
    keys: HashMap<Box<str>, Arc<ParsedPublicKey>>,
    policy: ClaimPolicy,
    challenge: Arc<ChallengeParams>,
}

impl StaticJwtVerifier {
    /// A verifier of `issuer`'s tokens against the keys of the JWKS document `jwks`, with
    /// the claim rules of `config`. `None` if `jwks` is not a JWKS document.
    pub fn new(issuer: impl Into<String>, jwks: &[u8], config: &JwtConfig) -> Option<Self> {
        let issuer = issuer.into();
        let keys = jwks::parse_key_set(jwks, &issuer).ok()?;
        Some(StaticJwtVerifier {
            issuer,
            keys,
            policy: ClaimPolicy::from_config(config),
            challenge: ChallengeParams::shared_default(),
        })
    }

    /// The principal of a valid token; a refusal is always 401 `invalid_token`.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.grant(token)
            .map(|grant| Principal::new(grant, Arc::clone(&self.challenge), Arc::default()))
            .map_err(|refusal| AuthError::InvalidToken(refusal.reason()))
    }

    fn grant(&self, token: &str) -> Result<Grant, Refusal> {
        let jws = jose::parse(token)?;
        let claims = Claims::parse(&jws.payload)?;
        if claims.iss != self.issuer {
            return Err(Refusal::WrongIssuer);
        }
        let key = self.keys.get(jws.kid.as_str()).ok_or(Refusal::UnknownKey)?;
        signed_grant(&jws, claims, key, &self.policy)
    }
}

/// Entry points of the `jwt` fuzz target into the steps before and after the signature
/// check, compiled only under `cargo fuzz` (`--cfg fuzzing`): they are never part of a build
/// that verifies tokens.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzz {
    use std::time::SystemTime;

    /// The JOSE header rules: the token's `kid` if its header passes.
    pub fn header(token: &str) -> Option<String> {
        super::jose::parse(token).ok().map(|jws| jws.kid)
    }

    /// The claim rules (default policy, issuer `iss`), as if the signature had verified:
    /// the grant's client id if the claims pass.
    pub fn claims(payload: &[u8], iss: &str, now: SystemTime) -> Option<String> {
        let claims = super::Claims::parse(payload).ok()?;
        if claims.iss != iss {
            return None;
        }
        let policy = super::ClaimPolicy::from_config(&super::JwtConfig::new());
        let grant = claims.into_grant(&policy, now).ok()?;
        Some(grant.client_id.as_str().to_owned())
    }
}

/// The JWT verifier of one [`Verifier`](crate::Verifier).
#[derive(Debug)]
pub(crate) struct JwtVerifier {
    issuers: Vec<Jwks>,
    policy: ClaimPolicy,
    /// `expected_audience` is set and the tenant audience was not accepted.
    resource_pinned: bool,
    refresh_every: Duration,
}

/// Shortest wait of the refresh timer between two looks at the issuers.
const MIN_TIMER_WAIT: Duration = Duration::from_millis(10);

impl JwtVerifier {
    /// Builds the verifier (no fetch yet: the first JWT loads its issuer's keys).
    pub(crate) fn new(
        config: &JwtConfig,
        expected_issuer: Option<&str>,
        expected_audience: Option<&str>,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, ConfigError> {
        config.validate(expected_issuer)?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("tower-wacht/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ConfigError::invalid("jwks client", e.to_string()))?;
        let mut issuers = Vec::new();
        for issuer in expected_issuer
            .into_iter()
            .chain(config.extra_issuers.iter().map(String::as_str))
        {
            if issuers.iter().any(|j: &Jwks| j.issuer == issuer) {
                continue;
            }
            issuers.push(Jwks::new(
                issuer.to_owned(),
                jwks_url(issuer)?,
                client.clone(),
                KeySetPolicy {
                    refresh_every: config.jwks_refresh,
                    unknown_kid_every: config.unknown_kid_refresh,
                    max_stale: config.jwks_max_stale,
                },
            ));
        }
        let resource_pinned = expected_audience.is_some() && !config.accept_tenant_audience;
        if resource_pinned {
            tracing::warn!(
                "JWT verification is on but this server pins its resource (expected_audience): Wacht JWTs name a tenant, not a resource, so every JWT is refused; call JwtConfig::accept_tenant_audience() to accept them knowingly"
            );
        } else if config.accept_tenant_audience && expected_audience.is_some() {
            tracing::warn!(
                "accept_tenant_audience: JWTs are accepted although this server pins its resource; a JWT names only a tenant, so any JWT of the trusted issuer for an accepted tenant and client passes"
            );
        }
        Ok(JwtVerifier {
            issuers,
            policy: ClaimPolicy::from_config(config),
            resource_pinned,
            refresh_every: config.jwks_refresh,
        })
    }

    /// Verifies a JWT: its grant, or why not. Records the outcome metric.
    pub(crate) async fn verify(&self, token: &str) -> Result<Verified, JwtFailure> {
        let outcome = self.check(token).await;
        match &outcome {
            Ok(_) => telemetry::jwt_verification("allowed", "none"),
            Err(JwtFailure::Refused(refusal)) => telemetry::jwt_verification("invalid_token", refusal.label()),
            Err(JwtFailure::Unavailable(why)) => telemetry::jwt_verification("unavailable", why.label()),
        }
        outcome
    }

    async fn check(&self, token: &str) -> Result<Verified, JwtFailure> {
        if self.resource_pinned {
            return Err(Refusal::ResourceAudienceRequired.into());
        }
        let jws = jose::parse(token)?;
        let claims = Claims::parse(&jws.payload)?;
        // The issuer picks whose keys to try; it is trusted only once the signature verifies.
        let jwks = self
            .issuers
            .iter()
            .find(|j| j.issuer == claims.iss)
            .ok_or(Refusal::WrongIssuer)?;
        // A token outside its validity is refused whoever signed it: no key is looked up for
        // it, and an `iat` in the future never holds a `kid` in suspense.
        claims.check_times(self.policy.leeway, SystemTime::now())?;
        let key = jwks.key(&jws.kid, claims.signed_by(self.policy.leeway)).await?;
        let grant = signed_grant(&jws, claims, &key.key, &self.policy)?;
        Ok(Verified {
            grant,
            keys_valid_for: key.valid_for,
        })
    }

    /// Refreshes every issuer's key set that the timer finds due (loaded ones only: an issuer
    /// no token named yet is fetched on first use).
    pub(crate) async fn refresh_due(&self) {
        // Side by side: an issuer that hangs holds up no other issuer's refresh.
        let due = self
            .issuers
            .iter()
            .filter(|jwks| jwks.is_loaded())
            .map(|jwks| jwks.refresh(Cause::Timer));
        futures_util::future::join_all(due).await;
    }

    /// How long the timer waits before its next look: until the first issuer's key set is
    /// due (it reaches `jwks_refresh`, or a failed fetch may be retried), or `jwks_refresh`
    /// while none is loaded. Timed from each set's fetch, a withdrawn key stops verifying at
    /// most `jwks_refresh` plus one fetch after its withdrawal.
    pub(crate) fn next_timer_wait(&self) -> Duration {
        let now = Instant::now();
        self.issuers
            .iter()
            .filter_map(Jwks::next_due)
            .min()
            .map_or(self.refresh_every, |due| due.saturating_duration_since(now))
            .max(MIN_TIMER_WAIT)
    }

    /// Changes whenever a refresh withdrew a key.
    pub(crate) fn removals(&self) -> u64 {
        self.issuers.iter().map(|j| j.removals.load(Ordering::Acquire)).sum()
    }
}
