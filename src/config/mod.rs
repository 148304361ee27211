//! [`WachtAuthConfig`]: every setting of the layer with a safe default, the
//! [`WachtAuthConfigBuilder`], and [`WachtAuthConfig::from_env`].
//!
//! The builder is flat (one method per setting); inside, the settings are grouped by the part
//! of the crate that reads them: the gateway client and miss path, the decision cache, the
//! pins and deny list, the challenges, and the request front door.

mod builder;
mod env;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Extensions, HeaderMap, Method};
use reqwest::Url;

pub use self::builder::WachtAuthConfigBuilder;
use crate::error::ConfigError;
use crate::metadata::ProtectedResourceMetadata;
use crate::principal::DeploymentId;
use crate::route::RouteRequest;
use crate::token::DEFAULT_MAX_TOKEN_LEN;

/// Default gateway base URL.
pub const DEFAULT_GATEWAY_URL: &str = "https://gateway.wacht.dev";

/// A Wacht backend API key. Its `Debug` and `Display` never show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Box<str>);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<Box<str>>) -> Self {
        ApiKey(key.into())
    }

    /// The raw key, for the `Authorization` header of gateway calls.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Configuration of a [`WachtAuthLayer`](crate::WachtAuthLayer).
///
/// Build it with [`WachtAuthConfig::builder`] or [`WachtAuthConfig::from_env`]. Every setting,
/// with its default and what the default means:
///
/// | setting | default | consequence |
/// | --- | --- | --- |
/// | `gateway_url` | `https://gateway.wacht.dev` | where opaque tokens are checked |
/// | `api_key` | none | sent to the gateway as `Authorization: Bearer` |
/// | `expected_deployment_id` / `expected_issuer` | required, one or both | tokens of other Wacht deployments get 401; [`accept_any_deployment`](WachtAuthConfigBuilder::accept_any_deployment) opts out (logged) |
/// | `expected_audience` | none (the metadata `resource` when one is set) | tokens issued for other resources get 401 |
/// | `allowed_clients` | any | a token of any OAuth client (for an API key: any app) that passes the pins is served |
/// | `accepted_tenants` | any | a token for any organization, workspace or user that passes the pins is served |
/// | `denied_clients` | none | OAuth clients refused even when the gateway allows them |
/// | `ttl` | 30 s | a revoked token keeps working on this server for at most this long (never past its expiry) |
/// | `negative_ttl` | 5 s | a token the gateway rejected is rejected locally for this long (zero: not remembered) |
/// | `max_capacity` | 100 000 | verified tokens kept; least useful evicted beyond |
/// | `max_cache_bytes` | 64 MiB | estimated bytes of cached principals (and of the outage grace); large ones evict sooner |
/// | `negative_max_capacity` | 10 000 | rejected tokens kept (separate, so junk cannot evict good entries) |
/// | `stale_if_error` | off | fail closed on gateway outages; opt in to a bounded grace |
/// | `refresh_ahead` | off | no background re-verification of hot tokens before their entry ends |
/// | `stream_recheck` | 5 s | a response still streaming (SSE, chunked, a gRPC stream) ends at its token's expiry, and at most this long after an invalidation or denial that covers it |
/// | `connect_timeout` / `request_timeout` | 1 s / 3 s | a slow gateway gives 503 after this, never a hang |
/// | `unavailable_retry_after` | 5 s | `Retry-After` on 503 |
/// | `max_inflight_gateway_calls` | 256 | a miss beyond this many gateway calls in flight gets 503 at once (floods of random tokens) |
/// | route reporting | from the request | what a miss reports to the gateway as `method` and `resource` (its per-endpoint rate limits, its audit line): the request's method and route template, bounded (see [`route`](crate::route)); [`report_fixed`](WachtAuthConfigBuilder::report_fixed) (or `method` / `resource`) reports fixed values, [`report_route`](WachtAuthConfigBuilder::report_route) your mapping |
/// | `method` / `resource` | `GET` / `/` | the fixed values: reported in the fixed mode, and by [`Verifier::verify`](crate::Verifier::verify) (no request) |
/// | `forward_user_agent` | on | the caller's `User-Agent` goes to the gateway on misses (its audit log) |
/// | `client_ip` | none | how to find the caller's IP on misses (else [`ClientIp`](crate::ClientIp), then Axum's `ConnectInfo`) |
/// | `max_token_len` | 4096 | longer tokens get 401 without a gateway call |
/// | `optional` | off | requests without a token are refused with 401 |
/// | `pass_cors_preflight` | off | CORS preflights without a token get 401; answer CORS outside the layer |
/// | `keep_authorization_header` | off | the token is removed from the request before your handlers (no passthrough) |
/// | `handler_step_up` | off | a handler's [`InsufficientScope::step_up`](crate::InsufficientScope::step_up) finds no layer (an Axum handler returning `InsufficientScope` is answered either way) |
/// | `realm` / `challenge_scopes` | none / the metadata's `scopes_supported`, else none | the `realm` and the `scope` suggested in 401 challenges |
/// | `resource_metadata` | none | no RFC 9728 document, no `resource_metadata` in challenges |
/// | `rate_limits` | metered, `per_app`, standard headers | requests served from cache count against the app's Wacht rate limits, and get 429 past them; responses carry `RateLimit-Policy` / `RateLimit`; see [`rate_limit`](crate::rate_limit) |
/// | `fleet` (feature `redis`) | off | each replica caches alone; see [`fleet`](crate::fleet) |
/// | `jwt` | off | JWT access tokens get 401 without a gateway call; see [`jwt`](crate::jwt) |
/// | `scope_hierarchy` | none | permissions match exactly; see [`scopes`](crate::scopes) |
///
/// There is deliberately no `Default`: a configuration that pins no tenant would accept the
/// tokens of every Wacht deployment, so the only ways to get one are
/// [`builder`](Self::builder)`…`[`build`](WachtAuthConfigBuilder::build) and
/// [`from_env`](Self::from_env), which refuse that.
///
/// ```compile_fail
/// let _unpinned = tower_wacht::WachtAuthConfig::default();
/// ```
#[derive(Clone, Debug)]
pub struct WachtAuthConfig {
    pub(crate) gateway: GatewaySettings,
    pub(crate) cache: CacheSettings,
    pub(crate) pins: PinSettings,
    pub(crate) challenge: ChallengeSettings,
    pub(crate) requests: RequestSettings,
    /// Fleet mode (feature `redis`).
    #[cfg(feature = "redis")]
    pub(crate) fleet: Option<crate::fleet::FleetConfig>,
    /// Local verification of JWT access tokens.
    pub(crate) jwt: Option<crate::jwt::JwtConfig>,
    /// Permission implications the guards judge with.
    pub(crate) scope_hierarchy: Arc<crate::scopes::ScopeHierarchy>,
    /// Which credentials are API keys, and the header they may also come in.
    pub(crate) api_keys: crate::api_key::ApiKeySettings,
    /// Metering of Wacht's rate limits on cached answers, and the headers it adds.
    pub(crate) rate_limits: crate::rate_limit::RateLimitConfig,
}

/// The gateway client and what a miss sends it.
#[derive(Clone, Debug)]
pub(crate) struct GatewaySettings {
    pub(crate) gateway_url: Url,
    pub(crate) api_key: Option<ApiKey>,
    /// How a miss reports the request's method and resource.
    pub(crate) route: RouteReporting,
    /// The fixed method and resource: reported in [`RouteReporting::Fixed`] mode, and by
    /// [`Verifier::verify`](crate::Verifier::verify), which has no request, in every mode.
    pub(crate) method: String,
    pub(crate) resource: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) unavailable_retry_after: Duration,
    pub(crate) max_inflight_gateway_calls: usize,
    pub(crate) forward_user_agent: bool,
    pub(crate) client_ip: Option<ClientIpFn>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            gateway_url: Url::parse(DEFAULT_GATEWAY_URL).unwrap_or_else(|_| unreachable!("constant URL parses")),
            api_key: None,
            route: RouteReporting::Request,
            method: "GET".into(),
            resource: "/".into(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(3),
            unavailable_retry_after: Duration::from_secs(5),
            max_inflight_gateway_calls: 256,
            forward_user_agent: true,
            client_ip: None,
        }
    }
}

/// The decision cache and its outage policy.
#[derive(Clone, Debug)]
pub(crate) struct CacheSettings {
    pub(crate) ttl: Duration,
    pub(crate) negative_ttl: Duration,
    pub(crate) max_capacity: u64,
    pub(crate) max_cache_bytes: u64,
    pub(crate) negative_max_capacity: u64,
    pub(crate) stale_if_error: Option<Duration>,
    pub(crate) refresh_ahead: Option<Duration>,
    /// How often a streamed response asks whether its caller still stands (the longest it
    /// outlives an invalidation or denial): a verdict held by a stream, as `ttl` bounds one
    /// held by the cache.
    pub(crate) stream_recheck: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            max_capacity: 100_000,
            max_cache_bytes: 64 * 1024 * 1024,
            negative_max_capacity: 10_000,
            stale_if_error: None,
            refresh_ahead: None,
            stream_recheck: Duration::from_secs(5),
        }
    }
}

/// What a token must match besides being valid, and who is refused anyway.
#[derive(Clone, Debug, Default)]
pub(crate) struct PinSettings {
    pub(crate) expected_deployment_id: Option<DeploymentId>,
    pub(crate) expected_issuer: Option<String>,
    pub(crate) expected_audience: Option<String>,
    pub(crate) accept_any_deployment: bool,
    pub(crate) denied_clients: Vec<String>,
    /// The OAuth clients served (empty: any). Validated by `build`, which also takes in the
    /// deprecated `JwtConfig` list.
    pub(crate) allowed_clients: Vec<String>,
    /// The tenant URNs served (empty: any). As `allowed_clients`.
    pub(crate) accepted_tenants: Vec<String>,
}

/// What 401 and 403 challenges carry.
#[derive(Clone, Debug, Default)]
pub(crate) struct ChallengeSettings {
    pub(crate) realm: Option<String>,
    pub(crate) challenge_scopes: Vec<String>,
    pub(crate) resource_metadata: Option<ProtectedResourceMetadata>,
}

/// How the layer treats the request itself before any verification.
#[derive(Clone, Debug)]
pub(crate) struct RequestSettings {
    pub(crate) optional: bool,
    pub(crate) pass_cors_preflight: bool,
    pub(crate) keep_authorization_header: bool,
    pub(crate) handler_step_up: bool,
    pub(crate) max_token_len: usize,
    /// Where the audit trail goes (default: nowhere).
    pub(crate) audit: crate::audit::AuditConfig,
}

impl Default for RequestSettings {
    fn default() -> Self {
        RequestSettings {
            optional: false,
            pass_cors_preflight: false,
            keep_authorization_header: false,
            handler_step_up: false,
            max_token_len: DEFAULT_MAX_TOKEN_LEN,
            audit: crate::audit::AuditConfig::new(),
        }
    }
}

/// What a miss reports to the gateway as the request's method and resource (see
/// [`route`](crate::route)).
#[derive(Clone)]
pub(crate) enum RouteReporting {
    /// The request's own route ([`RouteRequest::automatic`]).
    Request,
    /// The configured `method` and `resource`, whatever the request.
    Fixed,
    /// The application's mapping; the request's own route where it says `None`.
    Mapped(Arc<MapRoute>),
}

type MapRoute = dyn Fn(&RouteRequest<'_>) -> Option<(Method, String)> + Send + Sync;

impl RouteReporting {
    /// The mode's name, as the fleet's check profile and `Debug` show it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            RouteReporting::Request => "request",
            RouteReporting::Fixed => "fixed",
            RouteReporting::Mapped(_) => "mapped",
        }
    }
}

impl fmt::Debug for RouteReporting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the layer finds the caller's IP address (see
/// [`WachtAuthConfigBuilder::client_ip`]).
#[derive(Clone)]
pub(crate) struct ClientIpFn(pub(crate) Arc<FindClientIp>);

type FindClientIp = dyn Fn(&HeaderMap, &Extensions) -> Option<IpAddr> + Send + Sync;

impl fmt::Debug for ClientIpFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientIpFn(..)")
    }
}

impl WachtAuthConfig {
    /// A builder with every default.
    pub fn builder() -> WachtAuthConfigBuilder {
        WachtAuthConfigBuilder::default()
    }

    /// Every default, not yet validated: only a builder starts from this.
    pub(crate) fn unvalidated_defaults() -> Self {
        WachtAuthConfig {
            gateway: GatewaySettings::default(),
            cache: CacheSettings::default(),
            pins: PinSettings::default(),
            challenge: ChallengeSettings::default(),
            requests: RequestSettings::default(),
            #[cfg(feature = "redis")]
            fleet: None,
            jwt: None,
            scope_hierarchy: Arc::default(),
            api_keys: crate::api_key::ApiKeySettings::default(),
            rate_limits: crate::rate_limit::RateLimitConfig::default(),
        }
    }

    /// A builder holding this configuration, to adjust it.
    pub fn to_builder(&self) -> WachtAuthConfigBuilder {
        WachtAuthConfigBuilder {
            gateway_url: Some(self.gateway.gateway_url.to_string()),
            config: self.clone(),
        }
    }

    /// The configured audience (this server's resource URL), if any.
    pub fn expected_audience(&self) -> Option<&str> {
        self.pins.expected_audience.as_deref()
    }

    /// The configured issuer, if any.
    pub fn expected_issuer(&self) -> Option<&str> {
        self.pins.expected_issuer.as_deref()
    }

    /// The gateway base URL.
    pub fn gateway_url(&self) -> &str {
        self.gateway.gateway_url.as_str()
    }

    /// The byte budget of the decision cache (see [`WachtAuthConfigBuilder::max_cache_bytes`]).
    pub fn max_cache_bytes(&self) -> u64 {
        self.cache.max_cache_bytes
    }

    /// The JWT verification settings, when JWT access tokens are accepted.
    pub fn jwt(&self) -> Option<&crate::jwt::JwtConfig> {
        self.jwt.as_ref()
    }

    /// The RFC 9728 metadata document, if one is configured.
    pub fn resource_metadata(&self) -> Option<&ProtectedResourceMetadata> {
        self.challenge.resource_metadata.as_ref()
    }
}

/// An absolute http(s) URL without a fragment.
fn check_url(name: &'static str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| ConfigError::invalid(name, format!("not an absolute URL ({e})")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(ConfigError::invalid(name, "must be an http or https URL"));
    }
    if url.fragment().is_some() {
        return Err(ConfigError::invalid(name, "must not have a fragment"));
    }
    Ok(url)
}
