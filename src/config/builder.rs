//! [`WachtAuthConfigBuilder`]: every setting by name, validated by [`build`](WachtAuthConfigBuilder::build).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Extensions, HeaderMap};

use super::{ApiKey, ClientIpFn, RouteReporting, WachtAuthConfig, check_url};
use crate::error::ConfigError;
use crate::metadata::ProtectedResourceMetadata;
use crate::principal::{DeploymentId, ResourceUrn};
use crate::route::RouteRequest;

/// The longest [`stream_recheck`](WachtAuthConfigBuilder::stream_recheck) allowed.
const MAX_STREAM_RECHECK: Duration = Duration::from_secs(24 * 60 * 60);

/// Builder for [`WachtAuthConfig`]; see the defaults there.
#[derive(Clone, Debug)]
pub struct WachtAuthConfigBuilder {
    /// Set by [`gateway_url`](Self::gateway_url), checked by [`build`](Self::build).
    pub(super) gateway_url: Option<String>,
    pub(super) config: WachtAuthConfig,
}

impl Default for WachtAuthConfigBuilder {
    fn default() -> Self {
        WachtAuthConfigBuilder {
            gateway_url: None,
            config: WachtAuthConfig::unvalidated_defaults(),
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
        self.config.gateway.api_key = Some(ApiKey::new(key));
        self
    }

    /// Report the request's own method and route to the gateway on a miss: the default.
    /// Exactly what is reported is [`RouteRequest::automatic`]: the HTTP method (outside the
    /// gateway's allow-list, [`FALLBACK_METHOD`](crate::route::FALLBACK_METHOD)), and the
    /// gRPC method path, the MCP method and tool, the Axum route template or the path, never
    /// the query, at most [`MAX_RESOURCE_LEN`](crate::route::MAX_RESOURCE_LEN) bytes.
    /// Selects this mode again after [`report_fixed`](Self::report_fixed) or
    /// [`report_route`](Self::report_route).
    pub fn report_request_route(mut self) -> Self {
        self.config.gateway.route = RouteReporting::Request;
        self
    }

    /// Report the same method and resource on every miss, whatever the request (the fixed
    /// mode; before request routes, the only one, with `GET` and `/`). `method` must be one
    /// of the gateway's GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS and `resource` must not
    /// be empty, or [`build`](Self::build) fails; the resource is sent bounded like every
    /// reported one (see [`route`](crate::route): no query, at most 256 bytes). The gateway
    /// matches rate-limit rules on the resource (exact string or `*`), so every request then
    /// counts against the same rules.
    ///
    /// ```
    /// use http::Method;
    /// use tower_wacht::WachtAuthConfig;
    ///
    /// let config = WachtAuthConfig::builder()
    ///     .expected_issuer("https://auth.example.com")
    ///     .report_fixed(Method::GET, "/") // what every miss reported before request routes
    ///     .build();
    /// # assert!(config.is_ok());
    /// ```
    pub fn report_fixed(mut self, method: http::Method, resource: impl Into<String>) -> Self {
        self.config.gateway.route = RouteReporting::Fixed;
        self.config.gateway.method = method.as_str().to_owned();
        self.config.gateway.resource = resource.into();
        self
    }

    /// Report what `map` says of each missed request; where it says `None`, the request's own
    /// route ([`RouteRequest::automatic`]). Its answer is bounded like every reported route:
    /// a method outside the gateway's allow-list is sent as
    /// [`FALLBACK_METHOD`](crate::route::FALLBACK_METHOD); the resource is cut before any
    /// `?` or `#`, given a leading `/` and cut to
    /// [`MAX_RESOURCE_LEN`](crate::route::MAX_RESOURCE_LEN) bytes. It runs on cache misses
    /// only, before the gateway call: keep it cheap, and report nothing secret or without
    /// bound (an id, a credential header).
    ///
    /// ```
    /// use http::Method;
    /// use tower_wacht::WachtAuthConfig;
    ///
    /// let config = WachtAuthConfig::builder()
    ///     .expected_issuer("https://auth.example.com")
    ///     // A router without templates: name the tenant routes yourself.
    ///     .report_route(|request| {
    ///         let path = request.path();
    ///         path.starts_with("/tenants/").then(|| (request.method().clone(), "/tenants/*".to_owned()))
    ///     })
    ///     .build();
    /// # assert!(config.is_ok());
    /// ```
    pub fn report_route<F>(mut self, map: F) -> Self
    where
        F: Fn(&RouteRequest<'_>) -> Option<(http::Method, String)> + Send + Sync + 'static,
    {
        self.config.gateway.route = RouteReporting::Mapped(Arc::new(map));
        self
    }

    /// The fixed mode's HTTP method (default `GET`; one of GET, POST, PUT, PATCH, DELETE,
    /// HEAD, OPTIONS): selects the fixed mode, as [`report_fixed`](Self::report_fixed) does,
    /// keeping the fixed resource (default `/`). Also what [`Verifier::verify`](crate::Verifier::verify),
    /// which has no request, reports in every mode. The gateway uses it for audit only.
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.config.gateway.route = RouteReporting::Fixed;
        self.config.gateway.method = method.into();
        self
    }

    /// The fixed mode's resource path (default `/`); it selects gateway rate-limit rules.
    /// Selects the fixed mode, as [`report_fixed`](Self::report_fixed) does, keeping the
    /// fixed method (default `GET`). Also what [`Verifier::verify`](crate::Verifier::verify)
    /// reports in every mode.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.config.gateway.route = RouteReporting::Fixed;
        self.config.gateway.resource = resource.into();
        self
    }

    /// Longest time a verified token is served from the cache (default 30 s). This is the
    /// worst-case delay before a revocation takes effect here; entries never outlive the
    /// token's `expires_at`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.cache.ttl = ttl;
        self
    }

    /// How long a token the gateway rejected (401) is rejected without asking again
    /// (default 5 s; zero disables the negative cache).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.config.cache.negative_ttl = ttl;
        self
    }

    /// Maximum number of verified tokens cached (default 100 000).
    pub fn max_capacity(mut self, n: u64) -> Self {
        self.config.cache.max_capacity = n;
        self
    }

    /// Maximum number of rejected tokens remembered (default 10 000).
    pub fn negative_max_capacity(mut self, n: u64) -> Self {
        self.config.cache.negative_max_capacity = n;
        self
    }

    /// TCP/TLS connect timeout for gateway calls (default 1 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.gateway.connect_timeout = d;
        self
    }

    /// Total timeout of one gateway call, body included (default 3 s).
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.config.gateway.request_timeout = d;
        self
    }

    /// `Retry-After` sent with 503 when the gateway is unavailable (default 5 s).
    pub fn unavailable_retry_after(mut self, d: Duration) -> Self {
        self.config.gateway.unavailable_retry_after = d;
        self
    }

    /// Longest accepted token in bytes (default 4096); longer ones get 401 `invalid_token`.
    pub fn max_token_len(mut self, n: usize) -> Self {
        self.config.requests.max_token_len = n;
        self
    }

    /// Most gateway calls in flight at once for this layer (default 256). A cache miss that
    /// finds this many already waiting on the gateway is answered 503 with `Retry-After` at
    /// once instead of queueing: a flood of random tokens (each one a miss) cannot pile up
    /// calls on the gateway or memory here, and cached tokens keep being served. Misses that
    /// join a check already in flight for the same token do not count.
    pub fn max_inflight_gateway_calls(mut self, n: usize) -> Self {
        self.config.gateway.max_inflight_gateway_calls = n;
        self
    }

    /// Byte budget of the decision cache (default 64 MiB): cached principals are weighed by
    /// their estimated size (client id, scopes, permissions, issuer, audience), so a gateway
    /// answering large grants cannot grow memory past it. The entry limit
    /// ([`max_capacity`](Self::max_capacity)) applies as well; the outage grace
    /// ([`stale_if_error`](Self::stale_if_error)) has a budget of its own of the same size.
    pub fn max_cache_bytes(mut self, bytes: u64) -> Self {
        self.config.cache.max_cache_bytes = bytes;
        self
    }

    /// Accept only tokens issued by this Wacht deployment. One of this and
    /// [`expected_issuer`](Self::expected_issuer) is required (see
    /// [`accept_any_deployment`](Self::accept_any_deployment)).
    pub fn expected_deployment_id(mut self, id: i64) -> Self {
        self.config.pins.expected_deployment_id = Some(DeploymentId(id));
        self
    }

    /// Accept only tokens whose issuer (`x-wacht-oauth-issuer`) is this URL (your OAuth app's
    /// issuer, `https://<its domain>`).
    pub fn expected_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.config.pins.expected_issuer = Some(issuer.into());
        self
    }

    /// **Weakens security.** Accept valid tokens of every Wacht deployment. The gateway
    /// checks that a token is valid, not whose it is: anyone can create a deployment, an OAuth
    /// app with this server's scope names and resource URL, and a token the gateway accepts.
    /// Without this call, [`build`](Self::build) refuses a configuration that pins neither
    /// [`expected_deployment_id`](Self::expected_deployment_id) nor
    /// [`expected_issuer`](Self::expected_issuer). Logged at warn level when the layer is built.
    pub fn accept_any_deployment(mut self) -> Self {
        self.config.pins.accept_any_deployment = true;
        self
    }

    /// This server's resource URL: accept only tokens whose `oauth_resource` (audience) is it.
    /// MCP servers must set it.
    pub fn expected_audience(mut self, resource_url: impl Into<String>) -> Self {
        self.config.pins.expected_audience = Some(resource_url.into());
        self
    }

    /// `realm` of the `WWW-Authenticate` challenges (default: none).
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.config.challenge.realm = Some(realm.into());
        self
    }

    /// Scopes suggested in the `scope` parameter of 401 challenges (what a client should ask
    /// for). Default: the `scopes_supported` of the [`resource_metadata`](Self::resource_metadata)
    /// when it has any (MCP: a 401 SHOULD name a scope, and clients fall back to
    /// `scopes_supported` otherwise), else none. Name the minimal set a client needs first.
    pub fn challenge_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.challenge.challenge_scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Optional authentication: requests without any `Authorization` header pass through
    /// without a principal. A present but bad token is still rejected. Default: off.
    pub fn optional(mut self, optional: bool) -> Self {
        self.config.requests.optional = optional;
        self
    }

    /// Forward the caller's `User-Agent` to the gateway on a cache miss (audit). Default: on.
    pub fn forward_user_agent(mut self, on: bool) -> Self {
        self.config.gateway.forward_user_agent = on;
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
        self.config.gateway.client_ip = Some(ClientIpFn(Arc::new(find)));
        self
    }

    /// **Weakens security.** Let CORS preflights through without a token (default: off).
    ///
    /// Browsers send no credentials on a preflight, so by default one gets 401 like any request
    /// without a token: put your CORS layer *outside* the auth layer, where it answers
    /// preflights before they reach it. With this on, a request passes without a token only
    /// when it is `OPTIONS` with both `Origin` and `Access-Control-Request-Method`, and without
    /// a body, `Content-Type`, `TE` or `Transfer-Encoding` (as browsers send preflights: so
    /// never a gRPC call); it reaches the inner service without a principal, so anything behind the layer
    /// that does not check for one (an Axum `any()` route, a fallback, a Tonic service, which
    /// routes by path only) runs for it. Logged at warn level when the layer is built.
    pub fn pass_cors_preflight(mut self, on: bool) -> Self {
        self.config.requests.pass_cors_preflight = on;
        self
    }

    /// **Weakens security.** Leave the `Authorization` header on the request for the inner
    /// service (default: off). By default the layer removes it once it has used it, so handlers,
    /// their logs and anything they call never see the token (the MCP authorization spec
    /// forbids passing a client's token on). When kept, the header value is marked sensitive.
    /// Logged at warn level when the layer is built.
    pub fn keep_authorization_header(mut self, keep: bool) -> Self {
        self.config.requests.keep_authorization_header = keep;
        self
    }

    /// Let handlers that build no response of their own (an rmcp tool, a Tonic method) ask for
    /// step-up (default: off). With this on, every verified request carries a slot in its
    /// extensions where [`InsufficientScope::step_up`](crate::InsufficientScope::step_up)
    /// records a demand; when the handler's response comes back, the layer answers `403`
    /// `insufficient_scope` (gRPC: `PERMISSION_DENIED`) with its challenge instead: the demanded
    /// scopes, then the granted ones, `resource_metadata` and realm. It costs every verified
    /// request two small allocations (the slot and its extension entry), which is why it is
    /// off. An Axum handler that returns an `InsufficientScope` is answered so either way.
    pub fn handler_step_up(mut self, on: bool) -> Self {
        self.config.requests.handler_step_up = on;
        self
    }

    /// Record every decision the layer makes (default: off): as an `INFO` event on the
    /// `tracing` target `tower_wacht::audit` and/or to an
    /// [`AuditSink`](crate::audit::AuditSink) (see [`audit`](crate::audit) for the fields).
    /// Off, the request path only tests one flag; on, a request also works out its route and
    /// builds its record.
    pub fn audit(mut self, audit: crate::audit::AuditConfig) -> Self {
        self.config.requests.audit = audit;
        self
    }

    /// How Wacht's rate limits are kept on the requests served from cache (default: metered,
    /// rules counted `per_app`, `RateLimit-Policy` / `RateLimit` headers); see
    /// [`rate_limit`](crate::rate_limit).
    pub fn rate_limits(mut self, limits: crate::rate_limit::RateLimitConfig) -> Self {
        self.config.rate_limits = limits;
        self
    }

    /// Serve and advertise RFC 9728 metadata: every 401/403 challenge carries
    /// `resource_metadata="<its well-known URL>"`, [`WachtAuthLayer::metadata_router`](crate::WachtAuthLayer::metadata_router)
    /// serves it, and unless [`expected_audience`](Self::expected_audience) is set, the
    /// document's `resource` becomes the required token audience.
    pub fn resource_metadata(mut self, metadata: ProtectedResourceMetadata) -> Self {
        self.config.challenge.resource_metadata = Some(metadata);
        self
    }

    /// Outage grace (default: off, fail closed). While the gateway is unavailable (timeouts,
    /// connection errors, 5xx, unusable answers; not rate limits), a token verified before may
    /// keep being served for up to `grace` after its cache entry ended, never past the token's
    /// own expiry and never after [`invalidate`](crate::Verifier::invalidate) or a client deny.
    /// Each such answer is counted (`wacht_stale_served_total`) and logged at warn level.
    pub fn stale_if_error(mut self, grace: Duration) -> Self {
        self.config.cache.stale_if_error = (!grace.is_zero()).then_some(grace);
        self
    }

    /// Refresh-ahead (default: off). A token used within `window` of the end of its cache
    /// entry is re-verified in the background (one gateway call, by the request that noticed),
    /// so busy clients never wait on the gateway at a ttl boundary. A revocation found this way
    /// takes effect at once. Needs a Tokio runtime; `window` is clamped to the ttl.
    pub fn refresh_ahead(mut self, window: Duration) -> Self {
        self.config.cache.refresh_ahead = (!window.is_zero()).then_some(window);
        self
    }

    /// The longest a response that is still streaming (SSE, a chunked body, a gRPC server
    /// stream; any body of unknown length) outlives an invalidation, a client denial or a
    /// session / token-id denial that covers its caller, here or from another replica of the
    /// fleet (default 5 s). Such a body is watched: it ends at the token's `expires_at`
    /// whatever this says, and asks at most this often, and on a timer while idle, whether
    /// its caller still stands. A plain HTTP body just ends; a gRPC stream ends with
    /// `UNAUTHENTICATED` in its trailers. Bodies of known length are not watched. Must be
    /// greater than zero and at most a day.
    pub fn stream_recheck(mut self, bound: Duration) -> Self {
        self.config.cache.stream_recheck = bound;
        self
    }

    /// Accept Wacht API keys: a credential that starts with one of these prefixes and `_`
    /// (`sk_live` takes `sk_live_…`) is checked by the gateway as an API key
    /// (`principal.type = "api_key"`), cached, invalidated and denied like a token. Default:
    /// none, and no credential is taken for a key by its shape (an `oat_` token has the key
    /// format too). Needs [`expected_deployment_id`](Self::expected_deployment_id) (or
    /// [`accept_any_deployment`](Self::accept_any_deployment)): a key carries no issuer or
    /// audience to pin. Restrict routes with
    /// [`WachtAuthLayer::oauth_only`](crate::WachtAuthLayer::oauth_only) (an MCP endpoint must
    /// take OAuth tokens only) or [`api_keys_only`](crate::WachtAuthLayer::api_keys_only).
    pub fn api_key_prefixes<I, S>(mut self, prefixes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.api_keys.prefixes = prefixes.into_iter().map(Into::into).collect();
        self
    }

    /// Also take an API key from this header (e.g. `x-api-key`), besides
    /// `Authorization: Bearer`. Off by default. A request carrying both is refused (400
    /// `invalid_request`); what the header carries must be an API key (one of the
    /// [`api_key_prefixes`](Self::api_key_prefixes)), never an access token. The header is
    /// removed before the inner service runs, like `Authorization`.
    pub fn api_key_header(mut self, name: http::HeaderName) -> Self {
        self.config.api_keys.header = Some(name);
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
        self.config.pins.denied_clients = clients.into_iter().map(Into::into).collect();
        self
    }

    /// Serve only tokens of these OAuth client ids (default: any client). For an API key, the
    /// client is its API-auth app.
    ///
    /// Any user of your deployment can register an OAuth client and consent for their own
    /// organization, workspace or user, and the gateway calls that token valid: the pins
    /// (deployment, issuer, audience) do not tell your clients from theirs. This list, and
    /// [`accepted_tenants`](Self::accepted_tenants), do. They apply to every credential, however
    /// it was verified: an opaque token the gateway checked, a JWT verified here, an answer
    /// another replica shared through the fleet's Redis, one kept by the outage grace. A token
    /// of another client gets 401 `invalid_token` ("The access token was issued to a client
    /// this server does not serve."), whatever its format, and is remembered in the negative
    /// cache like a pin failure. Checked once, when a verdict enters the cache: a cached token
    /// pays nothing for it.
    ///
    /// An empty list allows any client. [`build`](Self::build) refuses an empty id or one
    /// with whitespace. Environment: `WACHT_ALLOWED_CLIENTS` (comma- or whitespace-separated).
    /// Replaces [`JwtConfig::allowed_clients`](crate::jwt::JwtConfig::allowed_clients)
    /// (deprecated, which bound JWTs only): setting both to different lists is refused.
    pub fn allowed_clients<I, S>(mut self, client_ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.pins.allowed_clients = client_ids.into_iter().map(Into::into).collect();
        self
    }

    /// Serve only tokens granted for these tenants (default: any tenant): Wacht tenant URNs,
    /// `urn:wacht:organization:<id>`, `urn:wacht:workspace:<id>` or `urn:wacht:user:<id>`,
    /// compared with the token's granted resource (a JWT's `aud`; for an API key, its
    /// organization or workspace). A token for another tenant, or one that names none, gets
    /// 401 `invalid_token` ("The access token was granted for a tenant this server does not
    /// serve."); see [`allowed_clients`](Self::allowed_clients) for why, and for where it
    /// applies (every credential, whatever its format or source).
    ///
    /// An empty list accepts any tenant. [`build`](Self::build) refuses anything that is not
    /// one of those URNs (ids in canonical decimal). Environment: `WACHT_ACCEPTED_TENANTS`
    /// (comma- or whitespace-separated). Replaces
    /// [`JwtConfig::accepted_tenants`](crate::jwt::JwtConfig::accepted_tenants) (deprecated,
    /// which bound JWTs only): setting both to different lists is refused.
    pub fn accepted_tenants<I, S>(mut self, urns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.pins.accepted_tenants = urns.into_iter().map(Into::into).collect();
        self
    }

    /// Fleet mode (feature `redis`): a decision tier and an ordered, durable change log shared by
    /// every replica, on Redis or Valkey (see [`fleet`](crate::fleet)). Off by default.
    #[cfg(feature = "redis")]
    pub fn fleet(mut self, fleet: crate::fleet::FleetConfig) -> Self {
        self.config.fleet = Some(fleet);
        self
    }

    /// Verifies JWT access tokens locally (RS256 against the JWKS of `expected_issuer`, which
    /// is then required), instead of refusing them. See [`jwt`](crate::jwt) for what is
    /// checked and [`JwtConfig`](crate::jwt::JwtConfig) for the settings.
    pub fn jwt(mut self, jwt: crate::jwt::JwtConfig) -> Self {
        self.config.jwt = Some(jwt);
        self
    }

    /// Permission implications (`projects:write` implies `projects:read`, optionally
    /// `projects:*` implies every `projects:…`) that every guard and
    /// [`Principal::has_permission`](crate::Principal::has_permission) honour; challenges
    /// still name exactly the permissions an operation needs. See [`scopes`](crate::scopes).
    pub fn scope_hierarchy(mut self, hierarchy: crate::scopes::ScopeHierarchy) -> Self {
        self.config.scope_hierarchy = Arc::new(hierarchy);
        self
    }

    /// Validates and returns the configuration.
    ///
    /// Fails with [`ConfigError::TenantNotPinned`] unless the deployment or the issuer is
    /// pinned, or [`accept_any_deployment`](Self::accept_any_deployment) was called.
    pub fn build(mut self) -> Result<WachtAuthConfig, ConfigError> {
        if let Some(url) = self.gateway_url.take() {
            let mut url = check_url("gateway_url", &url)?;
            // `join("v1/authz/check")` must append to the base path.
            if !url.path().ends_with('/') {
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
            self.config.gateway.gateway_url = url;
        }
        let c = &mut self.config;
        c.gateway.method = c.gateway.method.trim().to_ascii_uppercase();
        if !matches!(
            c.gateway.method.as_str(),
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS"
        ) {
            return Err(ConfigError::invalid(
                "method",
                "must be one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS",
            ));
        }
        if c.gateway.resource.trim().is_empty() {
            return Err(ConfigError::invalid("resource", "must not be empty"));
        }
        for (name, is_zero) in [
            ("ttl", c.cache.ttl.is_zero()),
            ("max_token_len", c.requests.max_token_len == 0),
            ("max_inflight_gateway_calls", c.gateway.max_inflight_gateway_calls == 0),
            ("max_cache_bytes", c.cache.max_cache_bytes == 0),
            ("max_capacity", c.cache.max_capacity == 0),
            ("connect_timeout", c.gateway.connect_timeout.is_zero()),
            ("request_timeout", c.gateway.request_timeout.is_zero()),
            ("stream_recheck", c.cache.stream_recheck.is_zero()),
        ] {
            if is_zero {
                return Err(ConfigError::invalid(name, "must be greater than zero"));
            }
        }
        if c.cache.stream_recheck > MAX_STREAM_RECHECK {
            return Err(ConfigError::invalid("stream_recheck", "must be at most a day"));
        }
        if c.pins.expected_audience.is_none()
            && let Some(m) = &c.challenge.resource_metadata
        {
            c.pins.expected_audience = Some(m.resource().to_owned());
        }
        if let Some(aud) = &c.pins.expected_audience {
            check_url("expected_audience", aud)?;
        }
        if c.challenge.challenge_scopes.is_empty()
            && let Some(m) = &c.challenge.resource_metadata
        {
            // What an MCP client would fall back to anyway; `offline_access` is refused in
            // `scopes_supported` when the document is built.
            c.challenge.challenge_scopes = m.scopes_supported().map(str::to_owned).collect();
        }
        if c.challenge
            .challenge_scopes
            .iter()
            .any(|s| crate::scopes::is_offline_access(s))
        {
            return Err(ConfigError::invalid(
                "challenge_scopes",
                "must not name offline_access: a challenge should never ask for a refresh token",
            ));
        }
        if let Some(iss) = &c.pins.expected_issuer {
            check_url("expected_issuer", iss)?;
        }
        if c.pins.expected_deployment_id.is_none() && c.pins.expected_issuer.is_none() && !c.pins.accept_any_deployment
        {
            return Err(ConfigError::TenantNotPinned);
        }
        c.api_keys.validate()?;
        if c.api_keys.header.is_some() && c.api_keys.prefixes.is_empty() {
            return Err(ConfigError::invalid(
                "api_key_header",
                "needs api_key_prefixes: what the header carries must be an API key",
            ));
        }
        if !c.api_keys.prefixes.is_empty() && c.pins.expected_deployment_id.is_none() && !c.pins.accept_any_deployment {
            return Err(ConfigError::invalid(
                "api_key_prefixes",
                "API keys need expected_deployment_id (WACHT_DEPLOYMENT_ID): a key has no issuer to pin",
            ));
        }
        if let Some(jwt) = &mut c.jwt {
            // The deprecated JWT-only lists are the verifier's lists now.
            adopt_deprecated(
                &mut c.pins.allowed_clients,
                std::mem::take(&mut jwt.clients),
                "allowed_clients",
            )?;
            adopt_deprecated(
                &mut c.pins.accepted_tenants,
                std::mem::take(&mut jwt.tenants),
                "accepted_tenants",
            )?;
        }
        check_allow_lists(
            &c.pins.allowed_clients,
            &c.pins.accepted_tenants,
            ["allowed_clients", "accepted_tenants"],
        )?;
        if let Some(jwt) = &c.jwt {
            jwt.validate(c.pins.expected_issuer.as_deref())?;
        }
        Ok(self.config)
    }
}

/// Takes in a list given through its deprecated `JwtConfig` name (`name`): alone, it becomes
/// the list; beside the list given by its own name, both must name the same ids (in any order),
/// else the configuration is refused: silently preferring one would serve clients or tenants
/// the operator meant to leave out, and a union would serve more than either says.
fn adopt_deprecated(list: &mut Vec<String>, deprecated: Vec<String>, name: &'static str) -> Result<(), ConfigError> {
    if deprecated.is_empty() {
        return Ok(());
    }
    tracing::warn!(
        "`JwtConfig::{name}` is deprecated: it now applies to every token, opaque or JWT; call `WachtAuthConfigBuilder::{name}` instead"
    );
    if list.is_empty() {
        *list = deprecated;
        return Ok(());
    }
    if same_entries(list, &deprecated) {
        return Ok(());
    }
    Err(ConfigError::invalid(
        name,
        format!(
            "`WachtAuthConfigBuilder::{name}` and the deprecated `JwtConfig::{name}` name different lists; set only `WachtAuthConfigBuilder::{name}` (it applies to every token)"
        ),
    ))
}

/// True if both lists hold the same entries, whatever their order and repeats.
pub(super) fn same_entries(a: &[String], b: &[String]) -> bool {
    fn set(list: &[String]) -> std::collections::BTreeSet<&str> {
        list.iter().map(String::as_str).collect()
    }
    set(a) == set(b)
}

/// The allow lists hold client ids and Wacht tenant URNs: anything else could never match a
/// token (a typo would refuse every one, or a URN of another kind would look like a pin).
/// `names`: the settings (or environment variables) to name in the error.
pub(super) fn check_allow_lists(
    clients: &[String],
    tenants: &[String],
    names: [&'static str; 2],
) -> Result<(), ConfigError> {
    if let Some(bad) = clients
        .iter()
        .find(|c| c.is_empty() || c.chars().any(char::is_whitespace))
    {
        return Err(ConfigError::invalid(
            names[0],
            format!("`{bad}` is not a client id: ids are not empty and hold no whitespace"),
        ));
    }
    for urn in tenants {
        if !matches!(
            ResourceUrn::parse(urn),
            ResourceUrn::Organization(_) | ResourceUrn::Workspace(_) | ResourceUrn::User(_)
        ) {
            return Err(ConfigError::invalid(
                names[1],
                format!(
                    "`{urn}` is not a Wacht tenant URN (urn:wacht:organization:<id>, urn:wacht:workspace:<id> or urn:wacht:user:<id>)"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_401_challenge_never_suggests_offline_access() {
        let err = WachtAuthConfig::builder()
            .expected_deployment_id(1)
            .challenge_scopes(["mcp:invoke", "offline_access"])
            .build()
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("offline_access"), "{err}");
    }
}
