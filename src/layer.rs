//! [`WachtAuthLayer`] and its service [`WachtAuth`]: the per-request hot path, top to bottom.
//!
//! ```text
//! call ─► parse Authorization ─► SHA-256 ─► cache hit? ─► insert Principal ─► inner.call
//!              │                              │ miss
//!              │                              ▼
//!              │                   boxed verification (single flight, gateway)
//!              ▼                              │ ok: insert Principal ─► inner.call
//!       reject locally (no gateway call)      └ err: reject (401 / 403 / 429 / 503, or gRPC)
//! ```
//!
//! A cache hit allocates nothing beyond the extension insert and never boxes.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{AUTHORIZATION, USER_AGENT};
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::ResponseBody;
use crate::config::WachtAuthConfig;
use crate::gateway::{Gateway, HttpGateway};
use crate::metadata::ProtectedResourceMetadata;
use crate::principal::Principal;
use crate::reject::{AuthError, ChallengeParams, render};
use crate::token::{OwnedBearer, TokenError, bearer_from_headers};
use crate::verify::{MissContext, Verifier};

/// The caller's IP address, for the gateway's audit log and per-IP rate limits.
///
/// Insert it into the request extensions in front of the layer, or let the layer find it with
/// [`WachtAuthConfigBuilder::client_ip`](crate::WachtAuthConfigBuilder::client_ip); with the
/// `axum` feature, Axum's `ConnectInfo<SocketAddr>` is used when neither gives one. It is
/// sent only on cache misses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Marker inserted into requests the layer passes without a principal, so extractors and
/// guards can render this layer's challenge, and know whether anonymous callers are allowed.
#[derive(Clone)]
pub(crate) struct Anonymous {
    pub(crate) challenge: Arc<ChallengeParams>,
    /// True in optional mode; false for a CORS preflight let through by
    /// [`pass_cors_preflight`](crate::WachtAuthConfigBuilder::pass_cors_preflight).
    pub(crate) optional: bool,
}

/// Tower layer that verifies Wacht OAuth access tokens and inserts a [`Principal`].
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
/// Axum body, so map the response body into one:
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{Router, ServiceExt, body::Body, extract::Request, response::Response, routing::get};
/// use tower::{Layer as _, util::MapResponse};
/// use tower_wacht::{Principal, ResponseBody, WachtAuthConfig, WachtAuthLayer};
///
/// let auth = WachtAuthLayer::new(WachtAuthConfig::from_env()?)?;
/// let router: Router = Router::new().route("/whoami", get(|p: Principal| async move { p.client_id().to_string() }));
/// let app = MapResponse::new(auth.layer(router), |response: Response<ResponseBody<Body>>| {
///     response.map(Body::new)
/// });
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// axum::serve(listener, ServiceExt::<Request>::into_make_service(app)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct WachtAuthLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    verifier: Arc<Verifier>,
    optional: bool,
    pass_cors_preflight: bool,
    keep_authorization_header: bool,
    max_token_len: usize,
    metadata: Option<ProtectedResourceMetadata>,
}

impl WachtAuthLayer {
    /// Builds the layer with the HTTP gateway client described by `config`.
    pub fn new(config: WachtAuthConfig) -> Result<Self, crate::ConfigError> {
        let gateway = HttpGateway::new(&config)?;
        Ok(Self::with_gateway(config, gateway))
    }

    /// Builds the layer over any [`Gateway`] implementation.
    pub fn with_gateway(config: WachtAuthConfig, gateway: impl Gateway) -> Self {
        let challenge = Arc::new(ChallengeParams {
            realm: config.realm.as_deref().map(Into::into),
            resource_metadata: config.resource_metadata.as_ref().map(|m| m.well_known_url().into()),
            scopes: config.challenge_scopes.iter().map(|s| s.as_str().into()).collect(),
        });
        let verifier = Arc::new(Verifier::new(&config, Arc::new(gateway), challenge));
        warn_about_weakened_defaults(&config);
        WachtAuthLayer {
            shared: Arc::new(Shared {
                verifier,
                optional: config.optional,
                pass_cors_preflight: config.pass_cors_preflight,
                keep_authorization_header: config.keep_authorization_header,
                max_token_len: config.max_token_len,
                metadata: config.resource_metadata,
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

    /// The verifier behind this layer (verify tokens outside HTTP, inspect the cache).
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.shared.verifier
    }

    /// Drops one token's cached decision at once (e.g. after revoking its grant).
    pub async fn invalidate(&self, token: &str) {
        self.shared.verifier.invalidate(token).await;
    }

    /// Drops every cached decision.
    pub fn invalidate_all(&self) {
        self.shared.verifier.invalidate_all();
    }
}

impl<S> Layer<S> for WachtAuthLayer {
    type Service = WachtAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WachtAuth {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service produced by [`WachtAuthLayer`].
#[derive(Clone, Debug)]
pub struct WachtAuth<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for WachtAuth<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let shared = &self.shared;
        let hash = match bearer_from_headers(req.headers(), shared.max_token_len) {
            Ok(Some(token)) => token.hash(),
            Ok(None) if shared.optional => return self.pass_anonymous(req, true),
            Ok(None) if shared.pass_cors_preflight && is_cors_preflight(&req) => {
                return self.pass_anonymous(req, false);
            }
            Ok(None) => return self.reject(&req, AuthError::MissingCredentials),
            Err(TokenError::DuplicateHeader) => {
                return self.reject(
                    &req,
                    AuthError::InvalidRequest("The request carries more than one Authorization header."),
                );
            }
            Err(TokenError::Malformed | TokenError::TooLong) => {
                return self.reject(&req, AuthError::InvalidToken("The access token is malformed."));
            }
        };

        // Hot path: a cached principal.
        if let Some(hit) = shared.verifier.lookup(&hash) {
            if let Some(refresh) = hit.refresh
                && refresh.claim()
                && let Some(token) = self.owned_token(&req)
            {
                // Refresh-ahead: this one request hands the token to a background
                // re-verification; it is served from the cache like every other.
                let ctx = miss_context(&req, &shared.verifier);
                shared.verifier.spawn_refresh(token, hash, ctx);
            }
            self.hide_token(&mut req);
            req.extensions_mut().insert(hit.principal);
            return ResponseFuture::inner(self.inner.call(req));
        }

        // Miss: verify in a boxed future that owns the token, then call the service that was
        // made ready (a fresh clone stays behind for the next request).
        let Some(token) = self.owned_token(&req) else {
            return self.reject(&req, AuthError::InvalidToken("The access token is malformed."));
        };
        if token.token().is_jwt_shaped() {
            // The gateway answers 401 for every JWT access token: never send it one.
            return self.reject(
                &req,
                AuthError::InvalidToken("JWT access tokens are not accepted by this server."),
            );
        }
        let ctx = miss_context(&req, &shared.verifier);
        self.hide_token(&mut req);
        let verifier = Arc::clone(&shared.verifier);
        let verify: BoxFuture<'static, Result<Principal, AuthError>> =
            Box::pin(async move { verifier.verify_miss(token.token(), hash, ctx).await });
        let fresh = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, fresh);
        ResponseFuture {
            state: State::Verifying {
                verify,
                request: Some(req),
                service: Some(service),
                challenge: Arc::clone(&shared.verifier.challenge),
            },
        }
    }
}

impl<S> WachtAuth<S> {
    fn reject<ReqB, Svc>(&self, req: &Request<ReqB>, error: AuthError) -> ResponseFuture<Svc, ReqB>
    where
        Svc: Service<Request<ReqB>>,
    {
        let response = render(error, &self.shared.verifier.challenge, req.version(), req.headers());
        ResponseFuture {
            state: State::Reject {
                response: Some(response),
            },
        }
    }

    /// Hands a request without credentials to the inner service, marked anonymous.
    fn pass_anonymous<ReqB>(&mut self, mut req: Request<ReqB>, optional: bool) -> ResponseFuture<S, ReqB>
    where
        S: Service<Request<ReqB>>,
    {
        self.hide_token(&mut req);
        req.extensions_mut().insert(Anonymous {
            challenge: Arc::clone(&self.shared.verifier.challenge),
            optional,
        });
        ResponseFuture::inner(self.inner.call(req))
    }

    /// The request's token, owned (the header value itself, not a copy of the secret).
    fn owned_token<ReqB>(&self, req: &Request<ReqB>) -> Option<OwnedBearer> {
        let value = req.headers().get(AUTHORIZATION)?.clone();
        OwnedBearer::from_header(value, self.shared.max_token_len)
    }

    /// No token passthrough: the inner service never sees the `Authorization` header, unless
    /// the configuration keeps it (then marked sensitive, so `Debug` and HTTP/2 HPACK treat
    /// it as a secret).
    fn hide_token<ReqB>(&self, req: &mut Request<ReqB>) {
        if self.shared.keep_authorization_header {
            if let Some(value) = req.headers_mut().get_mut(AUTHORIZATION) {
                value.set_sensitive(true);
            }
        } else {
            req.headers_mut().remove(AUTHORIZATION);
        }
    }
}

/// A CORS preflight as a browser sends it: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`, and no gRPC content type, whatever the HTTP version (a gRPC
/// method never needs a preflight, and Tonic routes by path alone, so it would run the method).
fn is_cors_preflight<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::OPTIONS
        && req.headers().contains_key(http::header::ORIGIN)
        && req.headers().contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
        && !req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().to_ascii_lowercase().starts_with(b"application/grpc"))
}

/// Says once, at start-up, which security-weakening settings are on.
fn warn_about_weakened_defaults(config: &WachtAuthConfig) {
    if config.accept_any_deployment {
        tracing::warn!(
            "accept_any_deployment(): tokens of every Wacht deployment are accepted; pin WACHT_DEPLOYMENT_ID or WACHT_OAUTH_ISSUER unless this is intended"
        );
    }
    if config.pass_cors_preflight {
        tracing::warn!(
            "pass_cors_preflight(true): CORS preflights reach the inner service without a token and without a principal"
        );
    }
    if config.keep_authorization_header {
        tracing::warn!("keep_authorization_header(true): handlers behind the layer can read the caller's access token");
    }
}

fn miss_context<B>(req: &Request<B>, verifier: &Verifier) -> MissContext {
    let user_agent = verifier
        .forward_user_agent
        .then(|| {
            req.headers()
                .get(USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .flatten();
    let client_ip = req.extensions().get::<ClientIp>().map(|ip| ip.0).or_else(|| {
        let find = verifier.client_ip.as_ref()?;
        (find.0)(req.headers(), req.extensions())
    });
    #[cfg(feature = "axum")]
    let client_ip = client_ip.or_else(|| {
        req.extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip())
    });
    MissContext {
        user_agent,
        client_ip: client_ip.map(|ip| ip.to_string()),
    }
}

pin_project! {
    /// Response future of [`WachtAuth`].
    pub struct ResponseFuture<S, ReqB>
    where
        S: Service<Request<ReqB>>,
    {
        #[pin]
        state: State<S, ReqB, S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqB, F> {
        Inner { #[pin] future: F },
        Reject { response: Option<Response<Full<Bytes>>> },
        Verifying {
            verify: BoxFuture<'static, Result<Principal, AuthError>>,
            request: Option<Request<ReqB>>,
            service: Option<S>,
            challenge: Arc<ChallengeParams>,
        },
    }
}

impl<S, ReqB> ResponseFuture<S, ReqB>
where
    S: Service<Request<ReqB>>,
{
    fn inner(future: S::Future) -> Self {
        ResponseFuture {
            state: State::Inner { future },
        }
    }
}

impl<S, ReqB, ResB> Future for ResponseFuture<S, ReqB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Output = Result<Response<ResponseBody<ResB>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Inner { future } => {
                    let response = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
                StateProj::Reject { response } => {
                    let response = response
                        .take()
                        .unwrap_or_else(|| Response::new(Full::new(Bytes::new())));
                    return Poll::Ready(Ok(response.map(ResponseBody::rejection)));
                }
                StateProj::Verifying {
                    verify,
                    request,
                    service,
                    challenge,
                } => {
                    let outcome = ready!(verify.as_mut().poll(cx));
                    let (Some(mut req), Some(mut svc)) = (request.take(), service.take()) else {
                        // Polled again after completion: answer like an unavailable gateway.
                        let error = AuthError::Unavailable {
                            retry_after: std::time::Duration::from_secs(1),
                        };
                        let response = error.into_response(challenge, false);
                        state.set(State::Reject {
                            response: Some(response),
                        });
                        continue;
                    };
                    match outcome {
                        Ok(principal) => {
                            req.extensions_mut().insert(principal);
                            let future = svc.call(req);
                            state.set(State::Inner { future });
                        }
                        Err(error) => {
                            let response = render(error, challenge, req.version(), req.headers());
                            state.set(State::Reject {
                                response: Some(response),
                            });
                        }
                    }
                }
            }
        }
    }
}
