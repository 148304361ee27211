//! [`WachtAuthLayer`] and its service [`WachtAuth`]: the per-request front door.
//!
//! ```text
//! call ─► take Authorization (parsed once, removed) ─► Verifier::authenticate
//!              │                                         ├ Hit(principal) ─► insert ─► inner.call
//!              │ none / malformed / repeated             ├ Miss(future)  ─► await ─► insert ─► inner.call
//!              ▼                                         └ Refused(error) ─► refuse
//!       anonymous (optional mode) or refuse (401 / 400)
//!
//! response ─► a handler demanded more scope (InsufficientScope)? ─► this layer's 403 instead
//!          ─► a handler's own AuthError? ─► this layer's challenge on it
//!          ─► a stream? ─► watched until the token no longer stands
//! ```
//!
//! A cache hit allocates nothing beyond the extension insert and never boxes; only a miss
//! boxes its verification.

pub(crate) mod future;
mod service;
mod stream;

use std::sync::Arc;

pub use self::service::WachtAuth;
use crate::change::ChangeOutcome;
use crate::config::WachtAuthConfig;
use crate::error::ConfigError;
use crate::gateway::Gateway;
use crate::metadata::ProtectedResourceMetadata;
use crate::principal::{ApiKeyId, OrganizationId, UserId, WorkspaceId};
use crate::reject::ChallengeParams;
use crate::verify::{Freshness, Verifier};

/// Tower layer that verifies Wacht OAuth access tokens and inserts a [`Principal`](crate::Principal).
///
/// Works around Axum routers and Tonic servers alike (generic over request and response
/// bodies). Clones share one verifier and cache.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{Router, routing::get};
/// use tower_wacht::{Principal, WachtAuthConfig, WachtAuthLayer};
///
/// let auth = WachtAuthLayer::new(WachtAuthConfig::from_env()?)?;
/// let app: Router = Router::new()
///     .route("/whoami", get(|p: Principal| async move { p.client_id().to_string() }))
///     .layer(auth);
/// # Ok(()) }
/// ```
///
/// `Router::layer` wraps every route in its own boxed copy of the layer. Wrapping the whole
/// app once is cheaper per request (measured in `BENCHMARKS.md`); `axum::serve` wants an
/// Axum body, which `ResponseAxumBodyLayer` gives:
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{Router, ServiceExt, extract::Request, middleware::ResponseAxumBodyLayer, routing::get};
/// use tower::ServiceBuilder;
/// use tower_wacht::{Principal, WachtAuthConfig, WachtAuthLayer};
///
/// let auth = WachtAuthLayer::new(WachtAuthConfig::from_env()?)?;
/// let router: Router = Router::new().route("/whoami", get(|p: Principal| async move { p.client_id().to_string() }));
/// let app = ServiceBuilder::new().layer(ResponseAxumBodyLayer).layer(auth).service(router);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// axum::serve(listener, ServiceExt::<Request>::into_make_service(app)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct WachtAuthLayer {
    shared: Arc<Shared>,
}

/// Which credentials a layer takes (see [`WachtAuthLayer::oauth_only`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accepts {
    /// Whatever the verifier takes: OAuth access tokens, and API keys when prefixes are
    /// configured.
    Any,
    OAuthOnly,
    ApiKeysOnly,
}

/// What every service of one layer shares.
/// The routes a layer checks live (see [`WachtAuthLayer::always_live_for`]), bounded as
/// reported routes are.
#[derive(Debug)]
pub(crate) struct LiveRoutes(Vec<String>);

impl LiveRoutes {
    fn new<I, S>(routes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        LiveRoutes(routes.into_iter().map(|r| crate::route::bounded(r.as_ref())).collect())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True if `route` is a live one, or names less than one does (it may be it).
    pub(crate) fn covers(&self, route: &str) -> bool {
        self.0.iter().any(|live| {
            live == route
                || (live.starts_with(route)
                    && (route.ends_with('/') || live.as_bytes().get(route.len()) == Some(&b'/')))
        })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) verifier: Arc<Verifier>,
    pub(crate) optional: bool,
    pub(crate) pass_cors_preflight: bool,
    pub(crate) keep_authorization_header: bool,
    pub(crate) handler_step_up: bool,
    pub(crate) max_token_len: usize,
    /// The header API keys may also come in.
    pub(crate) api_key_header: Option<http::HeaderName>,
    pub(crate) accepts: Accepts,
    /// How fresh an answer this layer takes (see [`WachtAuthLayer::always_live`]).
    pub(crate) freshness: Freshness,
    /// Routes this layer checks live whatever its freshness (see
    /// [`WachtAuthLayer::always_live_for`]).
    pub(crate) live_routes: Option<Arc<LiveRoutes>>,
    /// The challenge of an API-keys-only layer: no `resource_metadata` or `scope`, which
    /// would send an OAuth client to get a token this route does not take.
    pub(crate) key_challenge: Arc<ChallengeParams>,
    /// The audit trail, when enabled.
    pub(crate) audit: Option<Arc<crate::audit::Auditor>>,
    metadata: Option<ProtectedResourceMetadata>,
}

impl WachtAuthLayer {
    /// Builds the layer and its verifier, which checks tokens with the Wacht gateway.
    pub fn new(config: WachtAuthConfig) -> Result<Self, ConfigError> {
        let verifier = Verifier::from_config(&config)?;
        Ok(Self::with_verifier(config, verifier))
    }

    /// Builds the layer over any [`Gateway`] implementation (a test double, a custom client).
    /// Fails only in fleet mode, which needs a running Tokio runtime.
    pub fn with_gateway(config: WachtAuthConfig, gateway: impl Gateway) -> Result<Self, ConfigError> {
        let verifier = Verifier::with_gateway(&config, gateway)?;
        Ok(Self::with_verifier(config, verifier))
    }

    fn with_verifier(config: WachtAuthConfig, verifier: Verifier) -> Self {
        warn_about_weakened_defaults(&config);
        let verifier = Arc::new(verifier);
        crate::verify::register(&verifier);
        #[cfg(feature = "redis")]
        verifier.start_fleet();
        let requests = config.requests;
        let key_challenge = Arc::new(ChallengeParams {
            realm: verifier.challenge().realm.clone(),
            resource_metadata: None,
            scopes: Vec::new(),
        });
        WachtAuthLayer {
            shared: Arc::new(Shared {
                api_key_header: config.api_keys.header,
                accepts: Accepts::Any,
                freshness: Freshness::Cached,
                live_routes: None,
                key_challenge,
                verifier,
                optional: requests.optional,
                pass_cors_preflight: requests.pass_cors_preflight,
                keep_authorization_header: requests.keep_authorization_header,
                handler_step_up: requests.handler_step_up,
                max_token_len: requests.max_token_len,
                audit: crate::audit::Auditor::of(&requests.audit),
                metadata: config.challenge.resource_metadata,
            }),
        }
    }

    /// The RFC 9728 metadata document configured with
    /// [`WachtAuthConfigBuilder::resource_metadata`](crate::WachtAuthConfigBuilder::resource_metadata).
    pub fn resource_metadata(&self) -> Option<&ProtectedResourceMetadata> {
        self.shared.metadata.as_ref()
    }

    /// A router serving the configured metadata document (path-aware and root well-known
    /// paths, no authentication, CORS open), or an empty router if none is configured. Merge
    /// it outside the layer: `router.layer(auth.clone()).merge(auth.metadata_router())`.
    #[cfg(feature = "axum")]
    pub fn metadata_router<S: Clone + Send + Sync + 'static>(&self) -> axum::Router<S> {
        match &self.shared.metadata {
            Some(m) => m.router(),
            None => axum::Router::new(),
        }
    }

    /// This layer, taking OAuth access tokens only (opaque or JWT): an API key is refused with
    /// 401 `invalid_token` before any gateway call. Put it on an MCP endpoint (the MCP spec
    /// has clients authorize with OAuth) and on every route a key must not reach. Shares the
    /// verifier and cache of `self`.
    ///
    /// ```
    /// # fn f(auth: tower_wacht::WachtAuthLayer) {
    /// // Router::new().route_service("/mcp", mcp).layer(auth.oauth_only())
    /// //     .merge(Router::new().route("/v1/reports", get(reports)).layer(auth))
    /// let mcp_auth = auth.oauth_only();
    /// # let _ = mcp_auth; }
    /// ```
    pub fn oauth_only(&self) -> Self {
        self.accepting(Accepts::OAuthOnly)
    }

    /// This layer, taking API keys only (see
    /// [`api_key_prefixes`](crate::WachtAuthConfigBuilder::api_key_prefixes)): an access
    /// token is refused with 401 `invalid_token`, and no 401 of this layer names the RFC 9728
    /// metadata or scopes, so an OAuth client is not sent to get a token the route does not
    /// take. Shares the verifier and cache of `self`.
    pub fn api_keys_only(&self) -> Self {
        self.accepting(Accepts::ApiKeysOnly)
    }

    /// This layer, asking the gateway on every request: never answered from a cache tier
    /// (the per-thread front, the shared cache, the fleet's shared tier, the negative cache)
    /// nor from the outage grace (`stale_if_error`): a gateway outage is a 503 here. So a
    /// revocation is in force at once, and Wacht counts and audits every request. Shares the
    /// verifier and cache of `self`; its cost is a gateway round trip per request (and a
    /// place under [`max_inflight_gateway_calls`](crate::WachtAuthConfigBuilder::max_inflight_gateway_calls)).
    ///
    /// * Concurrent requests with one token each make their own call (no single flight).
    /// * A JWT access token is verified again locally on every request (signature, claims,
    ///   the session and token-id denials): the gateway does not check JWTs.
    /// * An allowance is not cached for other layers (it would restart the ttl they serve it
    ///   for). A refusal for good (401) is: it goes to the negative cache, and voids the
    ///   token's cached answer on this server, so the verifier's other layers refuse it too.
    ///
    /// Put it on the routes where a revoked token must stop at once (payments, admin,
    /// deletion) and keep the cached layer everywhere else:
    ///
    /// ```
    /// # fn f(auth: tower_wacht::WachtAuthLayer) {
    /// // Router::new().route("/v1/payouts", post(payout)).layer(auth.always_live())
    /// //     .merge(Router::new().route("/v1/reports", get(reports)).layer(auth))
    /// let live = auth.always_live();
    /// # let _ = live; }
    /// ```
    ///
    /// For some gRPC methods or MCP tools behind one layer (one endpoint, one Tonic server),
    /// use [`always_live_for`](Self::always_live_for).
    pub fn always_live(&self) -> Self {
        self.fresh(Freshness::Live)
    }

    /// This layer, serving a cached answer only if it was verified at most `max_age` ago;
    /// an older one is verified again through the usual miss path (one gateway call however
    /// many requests wait) and the fresh answer is cached for every layer. A copy of the
    /// fleet's shared tier is of unknown age here: it is never served by such a layer, whose
    /// misses ask the gateway directly. `max_age` at or above the cache ttl changes nothing.
    /// Shares the verifier and cache of `self`; a layer without it does no extra work on a
    /// hit.
    pub fn max_cache_age(&self, max_age: std::time::Duration) -> Self {
        self.fresh(Freshness::MaxAge(max_age))
    }

    /// This layer, checking live (as [`always_live`](Self::always_live) does) the requests
    /// whose route is one of `routes`, and the others as before. A route is named as the
    /// automatic route reporting names it (see [`route`](crate::route)): an MCP tool as
    /// `/mcp/tools/call/<tool>` (its endpoint's path, the MCP method and the tool, from the
    /// 2026-07-28 `Mcp-Method` and `Mcp-Name` headers), a gRPC method as its path
    /// (`/helloworld.Greeter/Shout`), an Axum route as its template (`/projects/{id}`).
    ///
    /// Fail closed: a request whose route is named less precisely than a live one (an MCP
    /// request without the mirrored headers reports `/mcp`; a tool name of other characters
    /// `/mcp/tools/call`) may be that one, and is checked live too. A client can still name
    /// another tool in the header than in its body: put [`McpGuardLayer`](crate::McpGuardLayer)
    /// inside this layer, which refuses such a request.
    ///
    /// ```
    /// # fn f(auth: tower_wacht::WachtAuthLayer) {
    /// // Every call of these two tools is checked by Wacht, counted and audited there; every
    /// // other MCP request is served from the cache.
    /// let mcp_auth = auth.always_live_for(["/mcp/tools/call/delete_project", "/mcp/tools/call/transfer"]);
    /// # let _ = mcp_auth; }
    /// ```
    pub fn always_live_for<I, S>(&self, routes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let routes = LiveRoutes::new(routes);
        WachtAuthLayer {
            shared: Arc::new(Shared {
                live_routes: (!routes.is_empty()).then(|| Arc::new(routes)),
                ..Shared::clone(&self.shared)
            }),
        }
    }

    fn fresh(&self, freshness: Freshness) -> Self {
        WachtAuthLayer {
            shared: Arc::new(Shared {
                freshness,
                ..Shared::clone(&self.shared)
            }),
        }
    }

    fn accepting(&self, accepts: Accepts) -> Self {
        WachtAuthLayer {
            shared: Arc::new(Shared {
                accepts,
                ..Shared::clone(&self.shared)
            }),
        }
    }

    /// The verifier behind this layer: verify tokens outside HTTP, inspect the cache.
    pub fn verifier(&self) -> &Verifier {
        &self.shared.verifier
    }

    /// The verifier, shared (for the webhook receiver).
    pub(crate) fn shared_verifier(&self) -> Arc<Verifier> {
        Arc::clone(&self.shared.verifier)
    }

    /// Drops one token's cached decision at once (e.g. after revoking its grant); see
    /// [`Verifier::invalidate`] for what the outcome says.
    pub async fn invalidate(&self, token: &str) -> ChangeOutcome {
        self.shared.verifier.invalidate(token).await
    }

    /// Drops every cached decision (see [`Verifier::invalidate_all`]).
    pub async fn invalidate_all(&self) -> ChangeOutcome {
        self.shared.verifier.invalidate_all().await
    }

    /// Drops every cached token of one OAuth client (see [`Verifier::invalidate_client`]).
    pub async fn invalidate_client(&self, client_id: &str) -> ChangeOutcome {
        self.shared.verifier.invalidate_client(client_id).await
    }

    /// Drops every cached answer for one Wacht user's tokens and API keys (see
    /// [`Verifier::invalidate_user`]).
    pub async fn invalidate_user(&self, user_id: UserId) -> ChangeOutcome {
        self.shared.verifier.invalidate_user(user_id).await
    }

    /// Drops every cached answer for one API key (see [`Verifier::invalidate_api_key`]).
    pub async fn invalidate_api_key(&self, key_id: ApiKeyId) -> ChangeOutcome {
        self.shared.verifier.invalidate_api_key(key_id).await
    }

    /// Drops every cached answer granted for one organization (see
    /// [`Verifier::invalidate_organization`]).
    pub async fn invalidate_organization(&self, organization_id: OrganizationId) -> ChangeOutcome {
        self.shared.verifier.invalidate_organization(organization_id).await
    }

    /// Drops every cached answer granted for one workspace (see
    /// [`Verifier::invalidate_workspace`]).
    pub async fn invalidate_workspace(&self, workspace_id: WorkspaceId) -> ChangeOutcome {
        self.shared.verifier.invalidate_workspace(workspace_id).await
    }

    /// Refuses every token of one OAuth client from now on (see [`Verifier::deny_client`]).
    pub async fn deny_client(&self, client_id: &str) -> ChangeOutcome {
        self.shared.verifier.deny_client(client_id).await
    }

    /// Lifts a [`deny_client`](Self::deny_client) (see [`Verifier::allow_client`]).
    pub async fn allow_client(&self, client_id: &str) -> ChangeOutcome {
        self.shared.verifier.allow_client(client_id).await
    }
}

impl<S> tower_layer::Layer<S> for WachtAuthLayer {
    type Service = WachtAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WachtAuth::new(inner, Arc::clone(&self.shared))
    }
}

/// Says once, at start-up, which security-weakening settings are on.
fn warn_about_weakened_defaults(config: &WachtAuthConfig) {
    if config.pins.accept_any_deployment {
        tracing::warn!(
            "accept_any_deployment(): tokens of every Wacht deployment are accepted; pin WACHT_DEPLOYMENT_ID or WACHT_OAUTH_ISSUER unless this is intended"
        );
    }
    if config.requests.pass_cors_preflight {
        tracing::warn!(
            "pass_cors_preflight(true): CORS preflights reach the inner service without a token and without a principal"
        );
    }
    if config.requests.keep_authorization_header {
        tracing::warn!("keep_authorization_header(true): handlers behind the layer can read the caller's access token");
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;
    use futures_util::future::BoxFuture;
    use http::{Request, Response};
    use http_body::Frame;
    use http_body_util::{BodyExt as _, Empty, StreamBody};
    use tower_layer::Layer as _;
    use tower_service::Service as _;

    use super::{LiveRoutes, WachtAuthLayer};
    use crate::WachtAuthConfig;
    use crate::gateway::{CheckRequest, Decision, Gateway, GatewayError};
    use crate::principal::Grant;

    /// Allows every token, for an hour.
    struct AllowAll;

    impl Gateway for AllowAll {
        fn check<'a>(&'a self, _request: CheckRequest<'a>) -> BoxFuture<'a, Result<Decision, GatewayError>> {
            Box::pin(async {
                let grant = Grant::new("oc_a", SystemTime::now() + Duration::from_secs(3600));
                Ok(Decision::Allowed(Box::new(grant)))
            })
        }
    }

    /// Whether the body of a response to `oat_a`'s request, served from cache, ends within
    /// 200 ms. The handler's body streams and never ends by itself; with `drop_layer`, the
    /// layer and its service are gone before the response is answered.
    async fn stream_ends(drop_layer: bool) -> bool {
        let config = WachtAuthConfig::builder().accept_any_deployment().build().unwrap();
        let layer = WachtAuthLayer::with_gateway(config, AllowAll).unwrap();
        layer.verifier().verify("oat_a").await.unwrap();
        let mut svc = layer.layer(tower::service_fn(|_req: Request<Empty<Bytes>>| async {
            let events = futures_util::stream::pending::<Result<Frame<Bytes>, Infallible>>();
            Ok::<_, Infallible>(Response::new(StreamBody::new(events)))
        }));
        let request = Request::builder()
            .header(http::header::AUTHORIZATION, "Bearer oat_a")
            .body(Empty::new())
            .unwrap();
        let answer = svc.call(request);
        let kept = (!drop_layer).then_some((svc, layer));
        let response = answer.await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let frame = tokio::time::timeout(Duration::from_millis(200), body.frame()).await;
        drop(kept);
        matches!(frame, Ok(None))
    }

    #[tokio::test]
    async fn a_stream_whose_layer_is_gone_ends_at_once() {
        // The response keeps no reference to the verifier; once nothing holds it, a stream
        // cannot be watched, and is ended rather than served unwatched.
        assert!(stream_ends(true).await);
        assert!(
            !stream_ends(false).await,
            "a watched stream stays open while its layer lives"
        );
    }

    #[test]
    fn a_live_route_covers_itself_and_what_names_less_than_it() {
        let live = LiveRoutes::new(["/mcp/tools/call/delete_project", "/helloworld.Greeter/Shout"]);
        assert!(live.covers("/mcp/tools/call/delete_project"));
        // An MCP request without its mirrored headers, or with a name of other characters.
        assert!(live.covers("/mcp"));
        assert!(live.covers("/mcp/tools/call"));
        assert!(live.covers("/"));
        assert!(live.covers("/helloworld.Greeter/Shout"));
        assert!(!live.covers("/mcp/tools/call/delete_project_v2"));
        assert!(!live.covers("/mcp/tools/call/delete"));
        assert!(!live.covers("/mcp/tools/list"));
        assert!(!live.covers("/helloworld.Greeter/SayHello"));
        assert!(!live.covers("/mc"));
    }
}
