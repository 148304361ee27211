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
//! 3. the signature, with the issuer's key of that `kid` (an RSA key of 2048 bits or more
//!    from `<issuer>/.well-known/jwks.json`; an unknown `kid` triggers one rate-limited
//!    refresh);
//! 4. `token_use` is `access_token` (an id_token is signed by the same key), `exp` has not
//!    passed and `iat`/`nbf` are not in the future (both with the leeway), the lifetime is
//!    at most 24 hours, `aud` is a Wacht tenant URN (for a user URN, the user is `sub`), the
//!    tenant and client are accepted.
//!
//! Effective permissions are the scopes plus the mapping of the app's
//! [`ScopeDefinition`]s, computed as the gateway does. Unlike the gateway, nothing here knows
//! about revocation, membership or role changes after the token was issued: they were checked
//! when it was issued, and it stays valid until `exp` (Wacht cannot revoke a JWT early; use
//! [`Verifier::deny_session`](crate::Verifier::deny_session) and
//! [`deny_token_id`](crate::Verifier::deny_token_id) to cut one off on this server).

mod claims;
mod jose;
mod jwks;
mod permissions;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use aws_lc_rs::signature::ParsedPublicKey;
use reqwest::Url;

use self::claims::{ClaimPolicy, Claims};
pub(crate) use self::jwks::Cause;
use self::jwks::Jwks;
pub use self::permissions::ScopeDefinition;
use crate::error::ConfigError;
use crate::principal::{Grant, Principal, ResourceUrn};
use crate::reject::{AuthError, ChallengeParams, InvalidTokenReason};
use crate::telemetry;

/// Default leeway on `exp`, `iat` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Largest leeway accepted.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// Default interval between JWKS refreshes: a withdrawn (compromised) key stops verifying
/// within it.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// Default least time between two JWKS fetches caused by unknown `kid`s.
pub const DEFAULT_UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(30);

/// Local verification of JWT access tokens, enabled with
/// [`WachtAuthConfigBuilder::jwt`](crate::WachtAuthConfigBuilder::jwt) (or `WACHT_JWT=on`).
///
/// The trusted issuer is the configuration's
/// [`expected_issuer`](crate::WachtAuthConfigBuilder::expected_issuer) (required), plus any
/// added with [`also_trust_issuer`](Self::also_trust_issuer). Defaults:
///
/// | setting | default | consequence |
/// | --- | --- | --- |
/// | `accepted_tenants` | any | a JWT for any organization, workspace or user of the issuer is accepted |
/// | `allowed_clients` | any | a JWT of any OAuth client of the issuer is accepted |
/// | `leeway` | 30 s | clock skew tolerated on `exp`, `iat`, `nbf` (at most 5 min) |
/// | `jwks_refresh` | 5 min | a key withdrawn from the JWKS (compromised) stops verifying within this |
/// | `unknown_kid_refresh` | 30 s | made-up `kid`s cause at most one JWKS fetch per this interval |
/// | `scope_definitions` | none | permissions are the scopes alone |
/// | `accept_tenant_audience` | off | with an `expected_audience` (MCP), JWTs are refused: they name a tenant, not this resource |
#[derive(Clone, Debug)]
pub struct JwtConfig {
    pub(crate) extra_issuers: Vec<String>,
    pub(crate) tenants: Vec<String>,
    pub(crate) clients: Vec<String>,
    pub(crate) leeway: Duration,
    pub(crate) jwks_refresh: Duration,
    pub(crate) unknown_kid_refresh: Duration,
    pub(crate) definitions: Vec<ScopeDefinition>,
    pub(crate) accept_tenant_audience: bool,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            extra_issuers: Vec::new(),
            tenants: Vec::new(),
            clients: Vec::new(),
            leeway: DEFAULT_LEEWAY,
            jwks_refresh: DEFAULT_JWKS_REFRESH,
            unknown_kid_refresh: DEFAULT_UNKNOWN_KID_REFRESH,
            definitions: Vec::new(),
            accept_tenant_audience: false,
        }
    }
}

impl JwtConfig {
    /// JWT verification for the configuration's `expected_issuer`, with every default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts JWTs of another issuer too (another Wacht OAuth app's `https://<fqdn>`, compared
    /// exactly with `iss`); its keys come from `<issuer>/.well-known/jwks.json`. Opaque tokens
    /// are still pinned to the configuration's issuer and deployment.
    pub fn also_trust_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.extra_issuers.push(issuer.into());
        self
    }

    /// Accepts only JWTs whose audience is one of these tenant URNs
    /// (`urn:wacht:organization:<id>`, `urn:wacht:workspace:<id>`, `urn:wacht:user:<id>`).
    /// A Wacht JWT names the tenant the user granted, not an API: this and
    /// [`allowed_clients`](Self::allowed_clients) are how a server narrows whom it serves.
    pub fn accepted_tenants<I, S>(mut self, urns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tenants = urns.into_iter().map(Into::into).collect();
        self
    }

    /// Accepts only JWTs issued to these OAuth client ids (`client_id`).
    pub fn allowed_clients<I, S>(mut self, client_ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.clients = client_ids.into_iter().map(Into::into).collect();
        self
    }

    /// Clock skew tolerated on `exp`, `iat` and `nbf` (default 30 s, at most 5 min).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// How often the JWKS is fetched again (default 5 min). Wacht withdraws a compromised key
    /// from its JWKS at once and pushes nothing: this interval bounds how long such a key
    /// keeps verifying here. A refresh that withdraws a key drops every cached decision.
    pub fn jwks_refresh(mut self, interval: Duration) -> Self {
        self.jwks_refresh = interval;
        self
    }

    /// Least time between two JWKS fetches caused by tokens with an unknown `kid` (default
    /// 30 s). The first unknown `kid` after a key rotation is fetched at once; a flood of
    /// made-up kids costs the issuer at most one fetch per interval.
    pub fn unknown_kid_refresh(mut self, interval: Duration) -> Self {
        self.unknown_kid_refresh = interval;
        self
    }

    /// The OAuth app's scope definitions, so that effective permissions include the
    /// organization or workspace permissions the scopes map to, as the gateway computes them.
    /// The gateway reads them live; this copy changes only when you reconfigure.
    pub fn scope_definitions(mut self, definitions: Vec<ScopeDefinition>) -> Self {
        self.definitions = definitions;
        self
    }

    /// **Weakens audience checking.** Accepts JWTs on a server that pins its RFC 8707
    /// resource (`expected_audience`, set by MCP resource metadata), although a Wacht JWT's
    /// `aud` is the tenant URN and never this resource: any JWT of a trusted issuer for an
    /// accepted tenant and client is then accepted here, including one a client obtained for
    /// another API. Narrow it with [`allowed_clients`](Self::allowed_clients) and
    /// [`accepted_tenants`](Self::accepted_tenants). Logged at `warn` when the verifier is built.
    pub fn accept_tenant_audience(mut self) -> Self {
        self.accept_tenant_audience = true;
        self
    }

    /// Checks the settings against the rest of the configuration (called by `build`).
    pub(crate) fn validate(&self, expected_issuer: Option<&str>) -> Result<(), ConfigError> {
        let Some(issuer) = expected_issuer else {
            return Err(ConfigError::invalid(
                "jwt",
                "JWT verification needs `expected_issuer` (WACHT_OAUTH_ISSUER): the issuer whose keys are trusted",
            ));
        };
        for issuer in std::iter::once(issuer).chain(self.extra_issuers.iter().map(String::as_str)) {
            jwks_url(issuer)?;
        }
        for urn in &self.tenants {
            if !matches!(
                ResourceUrn::parse(urn),
                ResourceUrn::Organization(_) | ResourceUrn::Workspace(_) | ResourceUrn::User(_)
            ) {
                return Err(ConfigError::invalid(
                    "jwt accepted_tenants",
                    format!("`{urn}` is not a Wacht tenant URN"),
                ));
            }
        }
        if self.clients.iter().any(|c| c.trim().is_empty()) {
            return Err(ConfigError::invalid(
                "jwt allowed_clients",
                "must not contain an empty id",
            ));
        }
        if self.leeway > MAX_LEEWAY {
            return Err(ConfigError::invalid("jwt leeway", "at most 300 s"));
        }
        if self.jwks_refresh.is_zero() || self.unknown_kid_refresh.is_zero() {
            return Err(ConfigError::invalid(
                "jwt refresh intervals",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}

/// `<issuer>/.well-known/jwks.json`, for an https issuer (or http on a loopback host, for
/// tests): keys fetched over plain HTTP from elsewhere could be swapped in transit.
fn jwks_url(issuer: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(issuer).map_err(|e| ConfigError::invalid("jwt issuer", format!("`{issuer}`: {e}")))?;
    let host = url.host_str().unwrap_or("");
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err(ConfigError::invalid(
            "jwt issuer",
            format!(
                "`{issuer}` must be https (http only on a loopback host): its JWKS decides which tokens are genuine"
            ),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::invalid(
            "jwt issuer",
            format!("`{issuer}` has a query or fragment"),
        ));
    }
    let base = issuer.trim_end_matches('/');
    Url::parse(&format!("{base}/.well-known/jwks.json"))
        .map_err(|e| ConfigError::invalid("jwt issuer", format!("`{issuer}`: {e}")))
}

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
    /// The tenant is not an accepted one.
    TenantNotAccepted,
    /// The OAuth client is not an allowed one.
    ClientNotAllowed,
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
            Refusal::TenantNotAccepted => "tenant_not_accepted",
            Refusal::ClientNotAllowed => "client_not_allowed",
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
            Refusal::WrongAudience
            | Refusal::UserMismatch
            | Refusal::TenantNotAccepted
            | Refusal::ResourceAudienceRequired => InvalidTokenReason::WrongAudience,
            Refusal::ClientNotAllowed => InvalidTokenReason::DeniedClient,
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

/// Why a JWT did not become a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JwtFailure {
    /// Refused for good: 401.
    Refused(Refusal),
    /// No key set of its issuer could be loaded yet: 503, fail closed.
    Unavailable,
}

impl From<Refusal> for JwtFailure {
    fn from(refusal: Refusal) -> Self {
        JwtFailure::Refused(refusal)
    }
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
/// uses [`JwtConfig`] through the layer instead.
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
                config.jwks_refresh,
                config.unknown_kid_refresh,
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
    pub(crate) async fn verify(&self, token: &str) -> Result<Grant, JwtFailure> {
        let outcome = self.check(token).await;
        match &outcome {
            Ok(_) => telemetry::jwt_verification("allowed", "none"),
            Err(JwtFailure::Refused(refusal)) => telemetry::jwt_verification("invalid_token", refusal.label()),
            Err(JwtFailure::Unavailable) => telemetry::jwt_verification("unavailable", "no_jwks"),
        }
        outcome
    }

    async fn check(&self, token: &str) -> Result<Grant, JwtFailure> {
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
        let key = jwks.key(&jws.kid).await?;
        Ok(signed_grant(&jws, claims, &key, &self.policy)?)
    }

    /// Refreshes every issuer's key set that the timer finds due (loaded ones only: an issuer
    /// no token named yet is fetched on first use).
    pub(crate) async fn refresh_due(&self) {
        for jwks in &self.issuers {
            if jwks.is_loaded() {
                jwks.refresh(Cause::Timer).await;
            }
        }
    }

    /// How often the timer runs.
    pub(crate) fn refresh_every(&self) -> Duration {
        self.refresh_every
    }

    /// Changes whenever a refresh withdrew a key.
    pub(crate) fn removals(&self) -> u64 {
        self.issuers.iter().map(|j| j.removals.load(Ordering::Acquire)).sum()
    }
}
