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
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, Request, Response};
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
use crate::reject::{AuthError, ChallengeParams};
use crate::token::{BearerToken, TokenError, bearer_from_headers};
use crate::verify::{MissContext, Verifier};

/// The caller's IP address, for the gateway's audit log and per-IP rate limits.
///
/// Insert it into the request extensions in front of the layer, or let the layer find it with
/// [`WachtAuthConfigBuilder::client_ip`](crate::WachtAuthConfigBuilder::client_ip); with the
/// `axum` feature, Axum's `ConnectInfo<SocketAddr>` is used when neither gives one. It is
/// sent only on cache misses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Marker inserted for anonymous requests in optional mode, so extractors and guards can
/// render this layer's challenge.
#[derive(Clone)]
pub(crate) struct Anonymous(pub(crate) Arc<ChallengeParams>);

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
        WachtAuthLayer {
            shared: Arc::new(Shared {
                verifier,
                optional: config.optional,
                pass_cors_preflight: config.pass_cors_preflight,
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
            Ok(None) if shared.optional || (shared.pass_cors_preflight && is_cors_preflight(&req)) => {
                req.extensions_mut()
                    .insert(Anonymous(Arc::clone(&shared.verifier.challenge)));
                return ResponseFuture::inner(self.inner.call(req));
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
                && let Ok(Some(token)) = bearer_from_headers(req.headers(), shared.max_token_len)
            {
                // Refresh-ahead: this one request hands a copy of the token to a background
                // re-verification; it is served from the cache like every other.
                let ctx = miss_context(&req, &shared.verifier);
                shared.verifier.spawn_refresh(token.expose().to_owned(), hash, ctx);
            }
            req.extensions_mut().insert(hit.principal);
            return ResponseFuture::inner(self.inner.call(req));
        }

        // Miss: verify in a boxed future that owns a copy of the token, then call the service
        // that was made ready (a fresh clone stays behind for the next request).
        let token = match bearer_from_headers(req.headers(), shared.max_token_len) {
            Ok(Some(token)) => OwnedToken(token.expose().to_owned()),
            _ => return self.reject(&req, AuthError::InvalidToken("The access token is malformed.")),
        };
        let ctx = miss_context(&req, &shared.verifier);
        let verifier = Arc::clone(&shared.verifier);
        let verify: BoxFuture<'static, Result<Principal, AuthError>> = Box::pin(async move {
            let token = BearerToken::new_unchecked(&token.0);
            verifier.verify_miss(token, hash, ctx).await
        });
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
        let response = render(error, &self.shared.verifier.challenge, req.headers());
        ResponseFuture {
            state: State::Reject {
                response: Some(response),
            },
        }
    }
}

/// Renders a rejection in the protocol the request speaks.
pub(crate) fn render(error: AuthError, challenge: &ChallengeParams, headers: &HeaderMap) -> Response<Full<Bytes>> {
    error.into_response(challenge, is_grpc(headers))
}

/// A CORS preflight: `OPTIONS` with `Access-Control-Request-Method` (never carries credentials).
fn is_cors_preflight<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::OPTIONS && req.headers().contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// A request is gRPC when its `content-type` starts with `application/grpc` (any case).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().len() >= GRPC.len() && v.as_bytes()[..GRPC.len()].eq_ignore_ascii_case(GRPC))
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

/// The token copied out of the request for the miss path. Redacted `Debug`.
struct OwnedToken(String);

impl std::fmt::Debug for OwnedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnedToken(<redacted>)")
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
                            let response = render(error, challenge, req.headers());
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
