//! [`WachtAuthConfig`]: every knob of the layer with a safe default, a builder, and
//! [`WachtAuthConfig::from_env`].

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Extensions, HeaderMap};
use reqwest::Url;

use crate::metadata::ProtectedResourceMetadata;
use crate::principal::DeploymentId;
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

/// An invalid configuration value. The message names the setting, never a secret.
///
/// `Debug` prints the same sentence as `Display`, so `fn main() -> Result<(), Box<dyn Error>>`
/// shows the reader what to fix.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required environment variable is not set.
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    /// A value is present but unusable.
    #[error("invalid {name}: {reason}")]
    Invalid {
        /// The setting or environment variable.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither the deployment nor the issuer is pinned: the gateway accepts a valid token of
    /// any Wacht deployment, including one an attacker creates with this server's scope names.
    #[error(
        "no Wacht tenant is pinned: set WACHT_DEPLOYMENT_ID or WACHT_OAUTH_ISSUER (builder: \
         expected_deployment_id / expected_issuer), so that tokens of other Wacht deployments are \
         refused; to accept every deployment on purpose, call accept_any_deployment()"
    )]
    TenantNotPinned,
}

impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Configuration of a [`WachtAuthLayer`](crate::WachtAuthLayer).
///
/// Build it with [`WachtAuthConfig::builder`] or [`WachtAuthConfig::from_env`]. Defaults:
///
/// | setting | default | consequence |
/// | --- | --- | --- |
/// | `gateway_url` | `https://gateway.wacht.dev` | where tokens are checked |
/// | `ttl` | 30 s | a revoked token keeps working on this server for at most this long (never past its expiry) |
/// | `negative_ttl` | 5 s | a token the gateway rejected is rejected locally for this long |
/// | `expected_deployment_id` / `expected_issuer` | required, one or both | tokens of other Wacht deployments get 401; [`accept_any_deployment`](WachtAuthConfigBuilder::accept_any_deployment) opts out (logged) |
/// | `expected_audience` | none (the metadata `resource` when one is set) | tokens issued for other resources get 401 |
/// | `max_capacity` | 100 000 | verified tokens kept; least useful evicted beyond |
/// | `max_cache_bytes` | 64 MiB | estimated bytes of cached principals (and of the outage grace); large ones evict sooner |
/// | `negative_max_capacity` | 10 000 | rejected tokens kept (separate, so junk cannot evict good entries) |
/// | `connect_timeout` / `request_timeout` | 1 s / 3 s | a slow gateway gives 503 after this, never a hang |
/// | `unavailable_retry_after` | 5 s | `Retry-After` on 503 |
/// | `max_token_len` | 4096 | longer tokens get 401 without a gateway call |
/// | `max_inflight_gateway_calls` | 256 | a miss beyond this many gateway calls in flight gets 503 at once (floods of random tokens) |
/// | `method` / `resource` | `GET` / `/` | what is reported to the gateway for rate limits and audit |
/// | `stale_if_error` | off | fail closed on gateway outages; opt in to a bounded grace |
/// | `refresh_ahead` | off | re-verify hot tokens in the background before their entry ends |
/// | `optional` | off | requests without a token are refused with 401 |
/// | `forward_user_agent` | on | the caller's `User-Agent` goes to the gateway on misses (its audit log) |
/// | `keep_authorization_header` | off | the token is removed from the request before your handlers (no passthrough) |
/// | `pass_cors_preflight` | off | CORS preflights without a token get 401; answer CORS outside the layer |
/// | `denied_clients` | none | OAuth clients refused even when the gateway allows them |
#[derive(Clone, Debug)]
pub struct WachtAuthConfig {
    pub(crate) gateway_url: Url,
    pub(crate) api_key: Option<ApiKey>,
    pub(crate) method: String,
    pub(crate) resource: String,
    pub(crate) ttl: Duration,
    pub(crate) negative_ttl: Duration,
    pub(crate) max_capacity: u64,
    pub(crate) negative_max_capacity: u64,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) unavailable_retry_after: Duration,
    pub(crate) max_token_len: usize,
    pub(crate) max_inflight_gateway_calls: usize,
    pub(crate) max_cache_bytes: u64,
    pub(crate) accept_any_deployment: bool,
    pub(crate) keep_authorization_header: bool,
    pub(crate) expected_deployment_id: Option<DeploymentId>,
    pub(crate) expected_issuer: Option<String>,
    pub(crate) expected_audience: Option<String>,
    pub(crate) realm: Option<String>,
    pub(crate) challenge_scopes: Vec<String>,
    pub(crate) optional: bool,
    pub(crate) forward_user_agent: bool,
    pub(crate) pass_cors_preflight: bool,
    pub(crate) resource_metadata: Option<ProtectedResourceMetadata>,
    pub(crate) stale_if_error: Option<Duration>,
    pub(crate) refresh_ahead: Option<Duration>,
    pub(crate) denied_clients: Vec<String>,
    pub(crate) client_ip: Option<ClientIpFn>,
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

    /// Reads the configuration from the environment:
    ///
    /// * `WACHT_BACKEND_API_KEY` (required): the backend API key sent to the gateway;
    /// * `WACHT_GATEWAY_URL`: gateway base URL (default `https://gateway.wacht.dev`);
    /// * `WACHT_DEPLOYMENT_ID`: accept only tokens of this deployment;
    /// * `WACHT_OAUTH_ISSUER`: accept only tokens from this issuer;
    /// * `WACHT_RESOURCE_URL`: this server's resource URL; accept only tokens issued for it.
    ///
    /// At least one of `WACHT_DEPLOYMENT_ID` and `WACHT_OAUTH_ISSUER` is required
    /// ([`ConfigError::TenantNotPinned`] otherwise): the gateway accepts tokens of every Wacht
    /// deployment.
    ///
    /// Empty variables count as unset. Every other setting keeps its default; adjust the
    /// result with [`WachtAuthConfig::to_builder`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup` (for tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let api_key = get("WACHT_BACKEND_API_KEY").ok_or(ConfigError::Missing("WACHT_BACKEND_API_KEY"))?;
        let mut b = WachtAuthConfig::builder().api_key(api_key);
        if let Some(url) = get("WACHT_GATEWAY_URL") {
            b = b.gateway_url(url);
        }
        if let Some(id) = get("WACHT_DEPLOYMENT_ID") {
            let id = id.parse::<i64>().map_err(|_| ConfigError::Invalid {
                name: "WACHT_DEPLOYMENT_ID",
                reason: "expected a decimal deployment id".into(),
            })?;
            b = b.expected_deployment_id(id);
        }
        if let Some(issuer) = get("WACHT_OAUTH_ISSUER") {
            check_url("WACHT_OAUTH_ISSUER", &issuer)?;
            b = b.expected_issuer(issuer);
        }
        if let Some(resource) = get("WACHT_RESOURCE_URL") {
            check_url("WACHT_RESOURCE_URL", &resource)?;
            b = b.expected_audience(resource);
        }
        b.build()
    }

    /// A builder holding this configuration, to adjust it.
    pub fn to_builder(&self) -> WachtAuthConfigBuilder {
        WachtAuthConfigBuilder {
            gateway_url: Some(self.gateway_url.to_string()),
            config: self.clone(),
        }
    }

    /// The configured audience (this server's resource URL), if any.
    pub fn expected_audience(&self) -> Option<&str> {
        self.expected_audience.as_deref()
    }

    /// The configured issuer, if any.
    pub fn expected_issuer(&self) -> Option<&str> {
        self.expected_issuer.as_deref()
    }

    /// The gateway base URL.
    pub fn gateway_url(&self) -> &str {
        self.gateway_url.as_str()
    }

    /// The byte budget of the decision cache (see [`WachtAuthConfigBuilder::max_cache_bytes`]).
    pub fn max_cache_bytes(&self) -> u64 {
        self.max_cache_bytes
    }
}

fn check_url(name: &'static str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| ConfigError::Invalid {
        name,
        reason: format!("not an absolute URL ({e})"),
    })?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(ConfigError::Invalid {
            name,
            reason: "must be an http or https URL".into(),
        });
    }
    if url.fragment().is_some() {
        return Err(ConfigError::Invalid {
            name,
            reason: "must not have a fragment".into(),
        });
    }
    Ok(url)
}

/// Builder for [`WachtAuthConfig`]; see the defaults there.
#[derive(Clone, Debug)]
pub struct WachtAuthConfigBuilder {
    gateway_url: Option<String>,
    config: WachtAuthConfig,
}

impl Default for WachtAuthConfigBuilder {
    fn default() -> Self {
        WachtAuthConfigBuilder {
            gateway_url: None,
            config: WachtAuthConfig {
                gateway_url: Url::parse(DEFAULT_GATEWAY_URL).unwrap_or_else(|_| unreachable!("constant URL parses")),
                api_key: None,
                method: "GET".into(),
                resource: "/".into(),
                ttl: Duration::from_secs(30),
                negative_ttl: Duration::from_secs(5),
                max_capacity: 100_000,
                negative_max_capacity: 10_000,
                connect_timeout: Duration::from_secs(1),
                request_timeout: Duration::from_secs(3),
                unavailable_retry_after: Duration::from_secs(5),
                max_token_len: DEFAULT_MAX_TOKEN_LEN,
                max_inflight_gateway_calls: 256,
                max_cache_bytes: 64 * 1024 * 1024,
                accept_any_deployment: false,
                keep_authorization_header: false,
                expected_deployment_id: None,
                expected_issuer: None,
                expected_audience: None,
                realm: None,
                challenge_scopes: Vec::new(),
                optional: false,
                forward_user_agent: true,
                pass_cors_preflight: false,
                resource_metadata: None,
                stale_if_error: None,
                refresh_ahead: None,
                denied_clients: Vec::new(),
                client_ip: None,
            },
        }
    }
}

impl WachtAuthConfigBuilder {
    /// Gateway base URL (default `https://gateway.wacht.dev`). Must be http or https.
    pub fn gateway_url(mut self, url: impl Into<String>) -> Self {
        self.gateway_url = Some(url.into());
        self
    }

    /// The backend API key sent to the gateway as `Authorization: Bearer`.
    pub fn api_key(mut self, key: impl Into<Box<str>>) -> Self {
        self.config.api_key = Some(ApiKey::new(key));
        self
    }

    /// HTTP method reported to the gateway (default `GET`; one of GET, POST, PUT, PATCH,
    /// DELETE, HEAD, OPTIONS). The gateway uses it for audit only.
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.config.method = method.into();
        self
    }

    /// Resource path reported to the gateway (default `/`); it selects gateway rate-limit rules.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.config.resource = resource.into();
        self
    }

    /// Longest time a verified token is served from the cache (default 30 s). This is the
    /// worst-case delay before a revocation takes effect here; entries never outlive the
    /// token's `expires_at`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// How long a token the gateway rejected (401) is rejected without asking again
    /// (default 5 s; zero disables the negative cache).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.config.negative_ttl = ttl;
        self
    }

    /// Maximum number of verified tokens cached (default 100 000).
    pub fn max_capacity(mut self, n: u64) -> Self {
        self.config.max_capacity = n;
        self
    }

    /// Maximum number of rejected tokens remembered (default 10 000).
    pub fn negative_max_capacity(mut self, n: u64) -> Self {
        self.config.negative_max_capacity = n;
        self
    }

    /// TCP/TLS connect timeout for gateway calls (default 1 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout = d;
        self
    }

    /// Total timeout of one gateway call, body included (default 3 s).
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.config.request_timeout = d;
        self
    }

    /// `Retry-After` sent with 503 when the gateway is unavailable (default 5 s).
    pub fn unavailable_retry_after(mut self, d: Duration) -> Self {
        self.config.unavailable_retry_after = d;
        self
    }

    /// Longest accepted token in bytes (default 4096); longer ones get 401 `invalid_token`.
    pub fn max_token_len(mut self, n: usize) -> Self {
        self.config.max_token_len = n;
        self
    }

    /// Most gateway calls in flight at once for this layer (default 256). A cache miss that
    /// finds this many already waiting on the gateway is answered 503 with `Retry-After` at
    /// once instead of queueing: a flood of random tokens (each one a miss) cannot pile up
    /// calls on the gateway or memory here, and cached tokens keep being served. Misses that
    /// join a check already in flight for the same token do not count.
    pub fn max_inflight_gateway_calls(mut self, n: usize) -> Self {
        self.config.max_inflight_gateway_calls = n;
        self
    }

    /// Byte budget of the decision cache (default 64 MiB): cached principals are weighed by
    /// their estimated size (client id, scopes, permissions, issuer, audience), so a gateway
    /// answering large grants cannot grow memory past it. The entry limit
    /// ([`max_capacity`](Self::max_capacity)) applies as well; the outage grace
    /// ([`stale_if_error`](Self::stale_if_error)) has a budget of its own of the same size.
    pub fn max_cache_bytes(mut self, bytes: u64) -> Self {
        self.config.max_cache_bytes = bytes;
        self
    }

    /// Accept only tokens issued by this Wacht deployment. One of this and
    /// [`expected_issuer`](Self::expected_issuer) is required (see
    /// [`accept_any_deployment`](Self::accept_any_deployment)).
    pub fn expected_deployment_id(mut self, id: i64) -> Self {
        self.config.expected_deployment_id = Some(DeploymentId(id));
        self
    }

    /// Accept only tokens whose issuer (`x-wacht-oauth-issuer`) is this URL (your OAuth app's
    /// issuer, `https://<its domain>`).
    pub fn expected_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.config.expected_issuer = Some(issuer.into());
        self
    }

    /// **Weakens security.** Accept valid tokens of every Wacht deployment. The gateway
    /// checks that a token is valid, not whose it is: anyone can create a deployment, an OAuth
    /// app with this server's scope names and resource URL, and a token the gateway accepts.
    /// Without this call, [`build`](Self::build) refuses a configuration that pins neither
    /// [`expected_deployment_id`](Self::expected_deployment_id) nor
    /// [`expected_issuer`](Self::expected_issuer). Logged at warn level when the layer is built.
    pub fn accept_any_deployment(mut self) -> Self {
        self.config.accept_any_deployment = true;
        self
    }

    /// This server's resource URL: accept only tokens whose `oauth_resource` (audience) is it.
    /// MCP servers must set it.
    pub fn expected_audience(mut self, resource_url: impl Into<String>) -> Self {
        self.config.expected_audience = Some(resource_url.into());
        self
    }

    /// `realm` of the `WWW-Authenticate` challenges (default: none).
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.config.realm = Some(realm.into());
        self
    }

    /// Scopes suggested in the `scope` parameter of 401 challenges (what a client should ask
    /// for). Default: none.
    pub fn challenge_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.challenge_scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Optional authentication: requests without any `Authorization` header pass through
    /// without a principal. A present but bad token is still rejected. Default: off.
    pub fn optional(mut self, optional: bool) -> Self {
        self.config.optional = optional;
        self
    }

    /// Forward the caller's `User-Agent` to the gateway on a cache miss (audit). Default: on.
    pub fn forward_user_agent(mut self, on: bool) -> Self {
        self.config.forward_user_agent = on;
        self
    }

    /// Where to find the caller's IP address, which the gateway uses for its audit log and
    /// per-IP rate limits. Asked on cache misses only, when the request carries no
    /// [`ClientIp`](crate::ClientIp) extension; without it (and without a match) the layer
    /// falls back to Axum's `ConnectInfo<SocketAddr>` when present. For Tonic:
    ///
    /// ```
    /// use tonic::transport::server::TcpConnectInfo;
    /// use tower_wacht::WachtAuthConfig;
    ///
    /// let config = WachtAuthConfig::builder()
    ///     .api_key("sk_live_example")
    ///     .expected_issuer("https://auth.example.com")
    ///     .client_ip(|_headers, extensions| {
    ///         extensions.get::<TcpConnectInfo>()?.remote_addr().map(|addr| addr.ip())
    ///     })
    ///     .build();
    /// # assert!(config.is_ok());
    /// ```
    ///
    /// Behind a trusted reverse proxy, read its header here instead (never trust a
    /// client-supplied `X-Forwarded-For` on a server clients reach directly).
    pub fn client_ip<F>(mut self, find: F) -> Self
    where
        F: Fn(&HeaderMap, &Extensions) -> Option<IpAddr> + Send + Sync + 'static,
    {
        self.config.client_ip = Some(ClientIpFn(Arc::new(find)));
        self
    }

    /// **Weakens security.** Let CORS preflights through without a token (default: off).
    ///
    /// Browsers send no credentials on a preflight, so by default one gets 401 like any request
    /// without a token: put your CORS layer *outside* the auth layer, where it answers
    /// preflights before they reach it. With this on, a request passes without a token only
    /// when it is `OPTIONS` with both `Origin` and `Access-Control-Request-Method`, and is not
    /// gRPC; it reaches the inner service without a principal, so anything behind the layer
    /// that does not check for one (an Axum `any()` route, a fallback, a Tonic service, which
    /// routes by path only) runs for it. Logged at warn level when the layer is built.
    pub fn pass_cors_preflight(mut self, on: bool) -> Self {
        self.config.pass_cors_preflight = on;
        self
    }

    /// **Weakens security.** Leave the `Authorization` header on the request for the inner
    /// service (default: off). By default the layer removes it once it has used it, so handlers,
    /// their logs and anything they call never see the token (the MCP authorization spec
    /// forbids passing a client's token on). When kept, the header value is marked sensitive.
    /// Logged at warn level when the layer is built.
    pub fn keep_authorization_header(mut self, keep: bool) -> Self {
        self.config.keep_authorization_header = keep;
        self
    }

    /// Serve and advertise RFC 9728 metadata: every 401/403 challenge carries
    /// `resource_metadata="<its well-known URL>"`, [`WachtAuthLayer::metadata_router`](crate::WachtAuthLayer::metadata_router)
    /// serves it, and unless [`expected_audience`](Self::expected_audience) is set, the
    /// document's `resource` becomes the required token audience.
    pub fn resource_metadata(mut self, metadata: ProtectedResourceMetadata) -> Self {
        self.config.resource_metadata = Some(metadata);
        self
    }

    /// Outage grace (default: off, fail closed). While the gateway is unavailable (timeouts,
    /// connection errors, 5xx, unusable answers; not rate limits), a token verified before may
    /// keep being served for up to `grace` after its cache entry ended, never past the token's
    /// own expiry and never after [`invalidate`](crate::Verifier::invalidate) or a client deny.
    /// Each such answer is counted (`wacht_stale_served_total`) and logged at warn level.
    pub fn stale_if_error(mut self, grace: Duration) -> Self {
        self.config.stale_if_error = (!grace.is_zero()).then_some(grace);
        self
    }

    /// Refresh-ahead (default: off). A token used within `window` of the end of its cache
    /// entry is re-verified in the background (one gateway call, by the request that noticed),
    /// so busy clients never wait on the gateway at a ttl boundary. A revocation found this way
    /// takes effect at once. Needs a Tokio runtime; `window` is clamped to the ttl.
    pub fn refresh_ahead(mut self, window: Duration) -> Self {
        self.config.refresh_ahead = (!window.is_zero()).then_some(window);
        self
    }

    /// OAuth client ids whose tokens are refused with 401 `invalid_token` even when the
    /// gateway allows them (the gateway does not check whether a client is still active). The
    /// list can be changed at run time with [`Verifier::deny_client`](crate::Verifier::deny_client).
    pub fn denied_clients<I, S>(mut self, clients: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.denied_clients = clients.into_iter().map(Into::into).collect();
        self
    }

    /// Validates and returns the configuration.
    pub fn build(mut self) -> Result<WachtAuthConfig, ConfigError> {
        if let Some(url) = self.gateway_url.take() {
            let mut url = check_url("gateway_url", &url)?;
            // `join("v1/authz/check")` must append to the base path.
            if !url.path().ends_with('/') {
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
            self.config.gateway_url = url;
        }
        let c = &mut self.config;
        c.method = c.method.trim().to_ascii_uppercase();
        if !matches!(
            c.method.as_str(),
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS"
        ) {
            return Err(ConfigError::Invalid {
                name: "method",
                reason: "must be one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS".into(),
            });
        }
        if c.resource.trim().is_empty() {
            return Err(ConfigError::Invalid {
                name: "resource",
                reason: "must not be empty".into(),
            });
        }
        if c.ttl.is_zero() {
            return Err(ConfigError::Invalid {
                name: "ttl",
                reason: "must be greater than zero".into(),
            });
        }
        if c.max_token_len == 0 {
            return Err(ConfigError::Invalid {
                name: "max_token_len",
                reason: "must be greater than zero".into(),
            });
        }
        if c.max_inflight_gateway_calls == 0 {
            return Err(ConfigError::Invalid {
                name: "max_inflight_gateway_calls",
                reason: "must be greater than zero".into(),
            });
        }
        if c.max_cache_bytes == 0 {
            return Err(ConfigError::Invalid {
                name: "max_cache_bytes",
                reason: "must be greater than zero".into(),
            });
        }
        if c.connect_timeout.is_zero() || c.request_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                name: "timeout",
                reason: "must be greater than zero".into(),
            });
        }
        if c.expected_audience.is_none()
            && let Some(m) = &c.resource_metadata
        {
            c.expected_audience = Some(m.resource().to_owned());
        }
        if let Some(aud) = &c.expected_audience {
            check_url("expected_audience", aud)?;
        }
        if let Some(iss) = &c.expected_issuer {
            check_url("expected_issuer", iss)?;
        }
        if c.expected_deployment_id.is_none() && c.expected_issuer.is_none() && !c.accept_any_deployment {
            return Err(ConfigError::TenantNotPinned);
        }
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn from_env_reads_every_variable() {
        let c = WachtAuthConfig::from_lookup(env(&[
            ("WACHT_BACKEND_API_KEY", "sk_live_secret"),
            ("WACHT_GATEWAY_URL", "http://127.0.0.1:9000/base"),
            ("WACHT_DEPLOYMENT_ID", "418223109876543489"),
            ("WACHT_OAUTH_ISSUER", "https://auth.example.com"),
            ("WACHT_RESOURCE_URL", "https://api.example.com/mcp"),
        ]))
        .unwrap();
        assert_eq!(c.gateway_url.as_str(), "http://127.0.0.1:9000/base/");
        assert_eq!(c.expected_deployment_id, Some(DeploymentId(418223109876543489)));
        assert_eq!(c.expected_issuer(), Some("https://auth.example.com"));
        assert_eq!(c.expected_audience(), Some("https://api.example.com/mcp"));
        assert!(!format!("{c:?}").contains("sk_live_secret"));
    }

    #[test]
    fn from_env_reports_bad_values_by_name() {
        assert_eq!(
            WachtAuthConfig::from_lookup(env(&[])).unwrap_err(),
            ConfigError::Missing("WACHT_BACKEND_API_KEY")
        );
        let bad = |k: &'static str, v: &str| {
            let err = WachtAuthConfig::from_lookup(env(&[("WACHT_BACKEND_API_KEY", "k"), (k, v)])).unwrap_err();
            assert!(
                err.to_string().contains(k)
                    || matches!(&err, ConfigError::Invalid { name, .. } if name.contains("gateway")),
                "{err}"
            );
        };
        bad("WACHT_DEPLOYMENT_ID", "abc");
        bad("WACHT_OAUTH_ISSUER", "auth.example.com");
        bad("WACHT_RESOURCE_URL", "ftp://x/y");
        bad("WACHT_RESOURCE_URL", "https://x/y#frag");
        bad("WACHT_GATEWAY_URL", "not a url");
    }

    #[test]
    fn builder_validates_method() {
        let pinned = || WachtAuthConfig::builder().expected_deployment_id(1);
        assert!(pinned().method("post").build().is_ok());
        assert!(pinned().method("TRACE").build().is_err());
    }
}
