//! [`JwtConfig`]: which issuers are trusted, leeway, JWKS refresh and maximum age, and how
//! long session denials last. (Which clients and tenants are served is the verifier's, for
//! every token: [`WachtAuthConfigBuilder::allowed_clients`](crate::WachtAuthConfigBuilder::allowed_clients).)

use std::time::Duration;

use reqwest::Url;

use super::ScopeDefinition;
use crate::error::ConfigError;

/// Default leeway on `exp`, `iat` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Largest leeway accepted.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// Default interval between JWKS refreshes: a withdrawn (compromised) key stops verifying
/// within it.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// Default least time between two JWKS fetches caused by unknown `kid`s.
pub const DEFAULT_UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(30);
/// Default maximum age of a key set: past it without a successful fetch, JWTs get 503.
pub const DEFAULT_JWKS_MAX_STALE: Duration = Duration::from_secs(60 * 60);
/// Default lifetime of a session denial: as long as a Wacht refresh token lives, which is how
/// long Wacht keeps minting access tokens for the session.
pub const DEFAULT_SESSION_DENIAL_LIFETIME: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Local verification of JWT access tokens, enabled with
/// [`WachtAuthConfigBuilder::jwt`](crate::WachtAuthConfigBuilder::jwt) (or `WACHT_JWT=on`).
///
/// The trusted issuer is the configuration's
/// [`expected_issuer`](crate::WachtAuthConfigBuilder::expected_issuer) (required), plus any
/// added with [`also_trust_issuer`](Self::also_trust_issuer). Defaults:
///
/// | setting | default | consequence |
/// | --- | --- | --- |
/// | `leeway` | 30 s | clock skew tolerated on `exp`, `iat`, `nbf` (at most 5 min) |
/// | `jwks_refresh` | 5 min | a key withdrawn from the JWKS (compromised) stops verifying within this plus one fetch (`request_timeout`) |
/// | `unknown_kid_refresh` | 30 s | made-up `kid`s cause at most one JWKS fetch per this interval |
/// | `jwks_max_stale` | 1 h | while the JWKS cannot be fetched, its last key set verifies for at most this long, then JWTs get 503 |
/// | `session_denial_lifetime` | 30 days | [`deny_session`](crate::Verifier::deny_session) lasts this long |
/// | `scope_definitions` | none | permissions are the scopes alone |
/// | `accept_tenant_audience` | off | with an `expected_audience` (MCP), JWTs are refused: they name a tenant, not this resource |
///
/// Which OAuth clients and tenants are served is set on the configuration, for every token
/// whatever its format: [`WachtAuthConfigBuilder::allowed_clients`](crate::WachtAuthConfigBuilder::allowed_clients)
/// and [`accepted_tenants`](crate::WachtAuthConfigBuilder::accepted_tenants) (by default, any
/// client and tenant of the issuer). This type's [`allowed_clients`](Self::allowed_clients)
/// and [`accepted_tenants`](Self::accepted_tenants) are deprecated aliases of them.
#[derive(Clone, Debug)]
pub struct JwtConfig {
    pub(crate) extra_issuers: Vec<String>,
    /// The deprecated alias of the configuration's `accepted_tenants`, taken in by `build`.
    pub(crate) tenants: Vec<String>,
    /// The deprecated alias of the configuration's `allowed_clients`, taken in by `build`.
    pub(crate) clients: Vec<String>,
    pub(crate) leeway: Duration,
    pub(crate) jwks_refresh: Duration,
    pub(crate) unknown_kid_refresh: Duration,
    pub(crate) jwks_max_stale: Duration,
    pub(crate) session_denial_lifetime: Duration,
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
            jwks_max_stale: DEFAULT_JWKS_MAX_STALE,
            session_denial_lifetime: DEFAULT_SESSION_DENIAL_LIFETIME,
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

    /// **Deprecated**: use [`WachtAuthConfigBuilder::accepted_tenants`](crate::WachtAuthConfigBuilder::accepted_tenants),
    /// which applies to every token. This alias now does the same (it no longer binds JWTs
    /// only: an opaque token for another tenant is refused too), and
    /// [`build`](crate::WachtAuthConfigBuilder::build) logs a warning naming the new setting.
    /// Given both, `build` accepts them when they name the same URNs and refuses them
    /// ([`ConfigError`](crate::ConfigError) naming both) otherwise.
    #[deprecated(note = "use WachtAuthConfigBuilder::accepted_tenants, which applies to every token (opaque or JWT)")]
    pub fn accepted_tenants<I, S>(mut self, urns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tenants = urns.into_iter().map(Into::into).collect();
        self
    }

    /// **Deprecated**: use [`WachtAuthConfigBuilder::allowed_clients`](crate::WachtAuthConfigBuilder::allowed_clients),
    /// which applies to every token. This alias now does the same (it no longer binds JWTs
    /// only: an opaque token of another client is refused too), and
    /// [`build`](crate::WachtAuthConfigBuilder::build) logs a warning naming the new setting.
    /// Given both, `build` accepts them when they name the same ids and refuses them
    /// ([`ConfigError`](crate::ConfigError) naming both) otherwise.
    #[deprecated(note = "use WachtAuthConfigBuilder::allowed_clients, which applies to every token (opaque or JWT)")]
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
    /// from its JWKS at once and pushes nothing: while the JWKS answers, such a key stops
    /// verifying here at most this interval plus one fetch (`request_timeout`) after its
    /// withdrawal. A refresh that withdraws a key drops every cached JWT decision (opaque
    /// tokens' decisions stay).
    pub fn jwks_refresh(mut self, interval: Duration) -> Self {
        self.jwks_refresh = interval;
        self
    }

    /// Least time between two JWKS fetches caused by tokens with an unknown `kid` (default
    /// 30 s). The first unknown `kid` after a key rotation is fetched at once; a flood of
    /// made-up kids costs the issuer at most one fetch per interval. A `kid` is judged unknown
    /// (401) only against a key set fetched after the token was issued; until one is, the
    /// token gets 503 with `Retry-After` (a key rotated in while this budget is spent is
    /// never refused).
    pub fn unknown_kid_refresh(mut self, interval: Duration) -> Self {
        self.unknown_kid_refresh = interval;
        self
    }

    /// The longest a key set is trusted without a successful fetch (default 1 h, longer than
    /// `jwks_refresh`). While the JWKS cannot be fetched (an outage, a hang, or the 404 Wacht
    /// answers for a deactivated app), its last key set keeps verifying until it is this old
    /// (counted from the start of the fetch that got it), so a key withdrawn meanwhile keeps
    /// verifying at most this long; past it, every JWT of the issuer gets 503 with
    /// `Retry-After` (fail closed, logged at error level) until a fetch succeeds.
    pub fn jwks_max_stale(mut self, max_age: Duration) -> Self {
        self.jwks_max_stale = max_age;
        self
    }

    /// How long [`Verifier::deny_session`](crate::Verifier::deny_session) refuses a session's
    /// JWTs (default 30 days): Wacht keeps minting access tokens for a session for as long as
    /// its refresh token lives (30 days), whatever its access-token lifetime. A token-id
    /// denial ([`deny_token_id`](crate::Verifier::deny_token_id)) names one token and lasts
    /// as long as that token can be accepted (24 hours plus twice the leeway).
    pub fn session_denial_lifetime(mut self, lifetime: Duration) -> Self {
        self.session_denial_lifetime = lifetime;
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
    /// another API. Narrow it with
    /// [`WachtAuthConfigBuilder::allowed_clients`](crate::WachtAuthConfigBuilder::allowed_clients)
    /// and [`accepted_tenants`](crate::WachtAuthConfigBuilder::accepted_tenants). Logged at
    /// `warn` when the verifier is built.
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
        if self.leeway > MAX_LEEWAY {
            return Err(ConfigError::invalid("jwt leeway", "at most 300 s"));
        }
        if self.jwks_refresh.is_zero() || self.unknown_kid_refresh.is_zero() {
            return Err(ConfigError::invalid(
                "jwt refresh intervals",
                "must be greater than zero",
            ));
        }
        if self.jwks_max_stale <= self.jwks_refresh {
            return Err(ConfigError::invalid(
                "jwt jwks_max_stale",
                "must be longer than jwks_refresh: a key set is refreshed every jwks_refresh and must not expire before",
            ));
        }
        if self.session_denial_lifetime.is_zero() {
            return Err(ConfigError::invalid(
                "jwt session_denial_lifetime",
                "must be greater than zero",
            ));
        }
        Ok(())
    }

    /// How long a token-id denial lasts: as long as a token can be accepted after its id was
    /// learnt (its lifetime is at most 24 hours; its `iat` and `exp` each get the leeway).
    pub(crate) fn token_id_denial_lifetime(&self) -> Duration {
        super::claims::MAX_LIFETIME.saturating_add(self.leeway.saturating_mul(2))
    }
}

/// `<issuer>/.well-known/jwks.json`, for an https issuer (or http on a loopback host, for
/// tests): keys fetched over plain HTTP from elsewhere could be swapped in transit.
pub(super) fn jwks_url(issuer: &str) -> Result<Url, ConfigError> {
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
    if issuer.ends_with('/') {
        // `iss` is compared exactly, and Wacht writes it without a trailing slash: pinned
        // with one, every JWT would be refused as `wrong_issuer`.
        return Err(ConfigError::invalid(
            "jwt issuer",
            format!("`{issuer}` ends with '/': write it as Wacht's tokens carry it, without one"),
        ));
    }
    Url::parse(&format!("{issuer}/.well-known/jwks.json"))
        .map_err(|e| ConfigError::invalid("jwt issuer", format!("`{issuer}`: {e}")))
}
