//! Server child process (`--load-serve <mode> ...`): one mode's app, the FakeGateway on its own
//! thread, and the control channel to the orchestrator on stdin/stdout.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use tower_wacht::body::ResponseBody;
use tower_wacht::jwt::{JwtConfig, StaticJwtVerifier};
use tower_wacht::testing::{AccessTokenClaims, FakeGateway, Fault, JwksIssuer, TokenGrant};
use tower_wacht::{Principal, WachtAuthConfig, WachtAuthLayer};

use crate::{ANONYMOUS_ID, CHILD_MAX_LIFETIME, CLIENT_ID, Mode, PATH, Result, SERVE_ARG, bench_token};

/// Arguments after `--load-serve`.
struct Opts {
    mode: Mode,
    latency: Duration,
    hit_tokens: u64,
    cold_tokens: u64,
    /// CPU for the gateway thread, if pinning.
    gateway_cpu: Option<usize>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts> {
        let [mode, latency_ms, hit, cold, gateway_cpu] = args else {
            return Err(format!("expected 5 arguments after {SERVE_ARG}, got {args:?}").into());
        };
        Ok(Opts {
            mode: Mode::parse(mode).ok_or_else(|| format!("unknown mode {mode:?}"))?,
            latency: Duration::from_millis(latency_ms.parse()?),
            hit_tokens: hit.parse()?,
            cold_tokens: cold.parse()?,
            gateway_cpu: if gateway_cpu == "-" {
                None
            } else {
                Some(gateway_cpu.parse()?)
            },
        })
    }
}

pub(super) fn main(args: &[String]) -> Result<()> {
    let opts = Opts::parse(args)?;
    let (gateway, issuer, gateway_tid) = start_gateway(opts.gateway_cpu, opts.mode.jwt())?;
    // No rate limiting: one rule with a huge budget over a short window (the window keeps
    // the fake's per-app request log small).
    gateway.set_rate_limit(u32::MAX, Duration::from_secs(1));
    let grant = TokenGrant::new(CLIENT_ID)
        .scopes(["mcp:invoke", "projects:read"])
        .granted_resource("urn:wacht:organization:427001234567890561")
        .expires_in(Duration::from_secs(3600));
    for i in 0..opts.hit_tokens {
        gateway.register(&bench_token('h', i), grant.clone());
    }
    // A JWT mode's tokens are JWTs minted here (the issuer's keys live in this process):
    // `cold_tokens` new ones for `jwt-cold`, one per connection for the others.
    let jwts = match &issuer {
        Some(issuer) => mint(
            issuer,
            if opts.mode == Mode::JwtCold {
                opts.cold_tokens
            } else {
                opts.hit_tokens
            },
            opts.gateway_cpu,
        )?,
        None => {
            for i in 0..opts.cold_tokens {
                gateway.register(&bench_token('c', i), grant.clone());
            }
            Vec::new()
        }
    };
    gateway.register(&bench_token('s', 0), grant);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("load-server")
        .enable_all()
        .build()?;
    runtime.block_on(serve(opts, gateway, issuer, jwts, gateway_tid))
}

/// Starts the FakeGateway (and, for a JWT mode, the JwksIssuer serving the keys) on its own
/// thread and `current_thread` runtime, pinned to `cpu` if given. Returns the handles and
/// the thread's id (for CPU accounting).
fn start_gateway(cpu: Option<usize>, jwt: bool) -> Result<(FakeGateway, Option<JwksIssuer>, u32)> {
    type Started = (FakeGateway, Option<JwksIssuer>, u32);
    let (tx, rx) = mpsc::channel::<Result<Started, String>>();
    std::thread::Builder::new().name("fake-gateway".into()).spawn(move || {
        let tid = pin_current_thread(cpu);
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(err) => {
                let _ = tx.send(Err(err.to_string()));
                return;
            }
        };
        runtime.block_on(async move {
            let issuer = if jwt {
                match JwksIssuer::start().await {
                    Ok(issuer) => Some(issuer),
                    Err(err) => {
                        let _ = tx.send(Err(err.to_string()));
                        return;
                    }
                }
            } else {
                None
            };
            match FakeGateway::start().await {
                Ok(gateway) => {
                    let _ = tx.send(Ok((gateway, issuer, tid)));
                    std::future::pending::<()>().await;
                }
                Err(err) => {
                    let _ = tx.send(Err(err.to_string()));
                }
            }
        });
    })?;
    Ok(rx.recv()??)
}

/// Pins the calling thread to `cpu`, if given (best effort: the orchestrator reports the
/// plan, and CPU use per thread). Returns the thread's kernel id (0 if unknown).
fn pin_current_thread(cpu: Option<usize>) -> u32 {
    let tid = current_tid().unwrap_or(0);
    if let (Some(cpu), true) = (cpu, tid != 0) {
        let _ = Command::new("taskset")
            .args(["-p", "-c", &cpu.to_string(), &tid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    tid
}

/// `n` JWTs of the benchmark's client, each with its own `jti` and `sid`, claims shaped like
/// Wacht's (the scopes and tenant of the opaque tokens' grant). An RSA signature costs about
/// a millisecond, so a large set is minted by two threads, the second on `other_cpu` (the
/// gateway's), before the server listens.
fn mint(issuer: &JwksIssuer, n: u64, other_cpu: Option<usize>) -> Result<Vec<String>> {
    let claims = || AccessTokenClaims::new(CLIENT_ID).scopes(["mcp:invoke", "projects:read"]);
    let started = std::time::Instant::now();
    let half = n / 2;
    let (mut first, second) = std::thread::scope(|scope| {
        let helper = scope.spawn(|| {
            pin_current_thread(other_cpu);
            (half..n).map(|_| issuer.mint(&claims())).collect::<Vec<_>>()
        });
        let first: Vec<String> = (0..half).map(|_| issuer.mint(&claims())).collect();
        (first, helper.join())
    });
    first.extend(second.map_err(|_| "a minting thread panicked")?);
    if first.iter().any(String::is_empty) {
        return Err("minting a JWT failed".into());
    }
    if n >= 1000 {
        eprintln!("  (minted {n} JWTs in {:.1} s)", started.elapsed().as_secs_f64());
    }
    Ok(first)
}

/// Hands the minted JWTs to the orchestrator: one per line in a temporary file, named in
/// the `READY` line; the orchestrator reads and removes it.
fn write_tokens(tokens: &[String]) -> Result<Option<PathBuf>> {
    if tokens.is_empty() {
        return Ok(None);
    }
    let path = std::env::temp_dir().join(format!("tower-wacht-load-{}.jwt", std::process::id()));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    for token in tokens {
        writeln!(out, "{token}")?;
    }
    out.flush()?;
    Ok(Some(path))
}

/// The calling thread's kernel id, from `/proc/thread-self` (`<pid>/task/<tid>`).
fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

async fn serve(
    opts: Opts,
    gateway: FakeGateway,
    issuer: Option<JwksIssuer>,
    jwts: Vec<String>,
    gateway_tid: u32,
) -> Result<()> {
    let builder = WachtAuthConfig::builder()
        .gateway_url(gateway.url())
        .api_key("sk_test_loadbench");
    // `LOAD_RATE_LIMITS`: `headers` (the default: metered, `RateLimit-Policy` / `RateLimit`
    // on every response), `metered` (metered, no headers), `off` (not metered).
    // The `limits` set's modes name their setting.
    let setting = match opts.mode {
        Mode::HitUnmetered => Ok("off".to_owned()),
        Mode::HitMetered => Ok("metered".to_owned()),
        _ => std::env::var("LOAD_RATE_LIMITS"),
    };
    let limits = match setting.as_deref() {
        Ok("off") => tower_wacht::rate_limit::RateLimitConfig::default().disable_metering_unsafe(),
        Ok("metered") => {
            tower_wacht::rate_limit::RateLimitConfig::default().headers(tower_wacht::rate_limit::RateLimitHeaders::None)
        }
        _ => tower_wacht::rate_limit::RateLimitConfig::default(),
    };
    let config = builder
        .clone()
        .expected_deployment_id(tower_wacht::testing::EXAMPLE_DEPLOYMENT_ID)
        .rate_limits(limits);
    // JWT modes: local verification of the issuer's tokens (a JWT names no deployment: the
    // issuer is the pin).
    let jwt_config = issuer
        .as_ref()
        .map(|issuer| builder.expected_issuer(issuer.url()).jwt(JwtConfig::new()));
    let config = config.build()?;
    let app = Router::new().route(PATH, get(whoami));
    let mut outer = None;
    let mut floor = None;
    let app = match opts.mode {
        Mode::Baseline | Mode::BaselineJwt => app,
        Mode::Hit | Mode::HitApp | Mode::HitUnmetered | Mode::HitMetered | Mode::Cold | Mode::Stampede => {
            let auth = WachtAuthLayer::new(config)?;
            if matches!(
                opts.mode,
                Mode::Hit | Mode::HitApp | Mode::HitUnmetered | Mode::HitMetered
            ) {
                // "Tokens already verified": fill the cache before the first request.
                for i in 0..opts.hit_tokens {
                    auth.verifier()
                        .verify(&bench_token('h', i))
                        .await
                        .map_err(|e| format!("pre-verifying a hit token failed: {e}"))?;
                }
            }
            if opts.mode == Mode::HitApp {
                outer = Some(auth);
                app
            } else {
                app.layer(auth)
            }
        }
        Mode::HitJwt | Mode::JwtCold => {
            let config = jwt_config.ok_or("a JWT mode without its issuer")?.build()?;
            let auth = WachtAuthLayer::new(config)?;
            if opts.mode == Mode::HitJwt {
                // Every JWT verified (and cached) before the first request, as for `hit`.
                for token in &jwts {
                    auth.verifier()
                        .verify(token)
                        .await
                        .map_err(|e| format!("pre-verifying a JWT failed: {e}"))?;
                }
            }
            app.layer(auth)
        }
        Mode::JwtEveryRequest => {
            let issuer = issuer.as_ref().ok_or("a JWT mode without its issuer")?;
            let jwks = reqwest::get(issuer.jwks_url())
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            let verifier = StaticJwtVerifier::new(issuer.url(), &jwks, &JwtConfig::new())
                .ok_or("the issuer's JWKS did not parse")?;
            for token in &jwts {
                verifier
                    .verify(token)
                    .map_err(|e| format!("a JWT failed the static verifier: {e}"))?;
            }
            app.layer(middleware::from_fn_with_state(Arc::new(verifier), verify_every_request))
        }
        Mode::Floor => {
            // Not tower-wacht: what any layer that hands the handler a principal through
            // the request extensions costs, with no token parse, hash or cache lookup.
            let auth = WachtAuthLayer::new(config)?;
            let principal = auth
                .verifier()
                .verify(&bench_token('h', 0))
                .await
                .map_err(|e| format!("verifying the floor's token failed: {e}"))?;
            floor = Some(principal);
            app
        }
        Mode::Uncached => {
            let sdk = Arc::new(Sdk::new(&gateway.url())?);
            app.layer(middleware::from_fn_with_state(sdk, sdk_auth))
        }
    };
    if !opts.latency.is_zero() {
        gateway.set_fault(Some(Fault::Latency(opts.latency)));
    }
    gateway.reset_calls();

    let tokens_file = write_tokens(&jwts)?;
    drop(jwts);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        let tokens_file = tokens_file.map_or_else(|| "-".to_owned(), |p| p.display().to_string());
        writeln!(out, "READY {addr} {gateway_tid} {tokens_file}")?;
        out.flush()?;
    }
    std::thread::Builder::new()
        .name("load-control".into())
        .spawn(move || control(gateway))?;
    match (outer, floor) {
        (Some(auth), _) => {
            // `auth.layer(router)`: one `WachtAuth` around the whole app instead of one per
            // route. `axum::serve` wants an Axum body, so the response body is boxed into
            // one, as Axum's `Router::layer` also does.
            let svc =
                tower::util::MapResponse::new(tower::Layer::layer(&auth, app), |r: Response<ResponseBody<Body>>| {
                    r.map(Body::new)
                });
            serve_with_connect_info(listener, svc).await
        }
        (None, Some(principal)) => {
            let svc = tower::util::MapRequest::new(app, move |mut req: Request| {
                req.extensions_mut().insert(principal.clone());
                req
            });
            serve_with_connect_info(listener, svc).await
        }
        (None, None) => serve_with_connect_info(listener, app).await,
    }
}

/// `axum::serve` with `ConnectInfo<SocketAddr>`, for every shape of app the modes build.
async fn serve_with_connect_info<S>(listener: tokio::net::TcpListener, svc: S) -> Result<()>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let make = axum::ServiceExt::<Request>::into_make_service_with_connect_info::<SocketAddr>(svc);
    axum::serve(listener, make).await?;
    Ok(())
}

/// Answers the orchestrator on stdin/stdout; exits the process on `quit`, on end of input
/// (the orchestrator is gone) and after [`CHILD_MAX_LIFETIME`].
fn control(gateway: FakeGateway) {
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_MAX_LIFETIME);
        std::process::exit(2);
    });
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "calls" => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "CALLS {}", gateway.calls());
                let _ = out.flush();
            }
            "quit" => break,
            _ => {}
        }
    }
    std::process::exit(0);
}

/// The same handler in every mode: the caller's client id in a small JSON body.
async fn whoami(wacht: Option<Principal>, sdk: Option<Extension<SdkPrincipal>>) -> String {
    let id = match (&wacht, &sdk) {
        (Some(p), _) => p.client_id().as_str(),
        (None, Some(Extension(p))) => p.client_id.as_str(),
        (None, None) => ANONYMOUS_ID,
    };
    format!("{{\"client_id\":\"{id}\"}}\n")
}

/// `jwt-every-request`: what `jwt-authorizer` and most JWT middlewares do, built from this
/// crate's own checks: every request's token is verified in full (parse, RS256 signature,
/// claims) against keys fetched once, nothing is cached, and the principal goes into the
/// request extensions for the same handler.
async fn verify_every_request(
    State(verifier): State<Arc<StaticJwtVerifier>>,
    mut req: Request,
    next: Next,
) -> Response {
    let verified = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|token| verifier.verify(token));
    match verified {
        Some(Ok(principal)) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

// -----------------------------------------------------------------------------------------
// Mode 4: the official SDKs' model. Both the Rust SDK (`wacht` crate,
// `gateway().check_authz_with_principal_type`) and the JS SDK (`checkPrincipalAuthz`) send
// `POST {gateway}/v1/authz/check` with the token on every call; neither caches. The app
// calls it from a middleware and puts the parsed principal into the request. The SDKs'
// timeout is 30 s; here 3 s total, 1 s connect, like the layer's defaults.
// -----------------------------------------------------------------------------------------

struct Sdk {
    client: reqwest::Client,
    check_url: reqwest::Url,
}

impl Sdk {
    fn new(gateway_url: &str) -> Result<Sdk> {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            reqwest::header::HeaderValue::from_static("Bearer sk_test_loadbench"),
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(3))
            .build()?;
        let check_url = reqwest::Url::parse(&format!("{gateway_url}/v1/authz/check"))?;
        Ok(Sdk { client, check_url })
    }
}

#[derive(Serialize)]
struct SdkCheckBody<'a> {
    principal: SdkPrincipalBody<'a>,
    resource: &'a str,
    method: &'a str,
    client_ip: Option<String>,
    user_agent: Option<&'a str>,
    required_permissions: Option<Vec<String>>,
}

#[derive(Serialize)]
struct SdkPrincipalBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    value: &'a str,
}

/// The response fields the SDKs parse (`GatewayCheckResponse` / `AuthzCheckResponse`).
#[derive(Deserialize)]
struct SdkCheckResponse {
    allowed: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    identity: Option<SdkIdentity>,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default)]
    metadata: Option<SdkMetadata>,
}

#[derive(Deserialize)]
struct SdkIdentity {
    key_id: String,
    deployment_id: String,
    key_name: String,
    #[serde(default)]
    owner_user_id: Option<String>,
}

#[derive(Deserialize)]
struct SdkMetadata {
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    granted_resource: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

/// What the SDK model hands the handler (the parsed principal context).
#[derive(Clone)]
struct SdkPrincipal(Arc<SdkPrincipalInner>);

impl std::ops::Deref for SdkPrincipal {
    type Target = SdkPrincipalInner;
    fn deref(&self) -> &SdkPrincipalInner {
        &self.0
    }
}

// Kept like the SDK's principal context; the handler reads only the client id.
#[allow(dead_code)]
struct SdkPrincipalInner {
    client_id: String,
    key_id: String,
    deployment_id: String,
    owner_user_id: Option<String>,
    permissions: Vec<String>,
    scopes: Vec<String>,
    granted_resource: Option<String>,
    expires_at: Option<String>,
}

async fn sdk_auth(State(sdk): State<Arc<Sdk>>, mut req: Request, next: Next) -> Response {
    let Some(token) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
    else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let client_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let body = SdkCheckBody {
        principal: SdkPrincipalBody {
            kind: "oauth_access_token",
            value: &token,
        },
        resource: req.uri().path(),
        method: req.method().as_str(),
        client_ip,
        user_agent: None,
        required_permissions: None,
    };
    let response = match sdk.client.post(sdk.check_url.clone()).json(&body).send().await {
        Ok(r) => r,
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    match response.status().as_u16() {
        200..=299 => {}
        401 => return StatusCode::UNAUTHORIZED.into_response(),
        _ => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
    let decision: SdkCheckResponse = match response.json().await {
        Ok(d) => d,
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    if !decision.allowed {
        return match decision.reason.as_deref() {
            Some("rate_limited") => StatusCode::TOO_MANY_REQUESTS.into_response(),
            _ => StatusCode::FORBIDDEN.into_response(),
        };
    }
    let (Some(identity), Some(metadata)) = (decision.identity, decision.metadata) else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    req.extensions_mut().insert(SdkPrincipal(Arc::new(SdkPrincipalInner {
        client_id: identity.key_name,
        key_id: identity.key_id,
        deployment_id: identity.deployment_id,
        owner_user_id: identity.owner_user_id,
        permissions: decision.permissions,
        scopes: metadata.scopes,
        granted_resource: metadata.granted_resource,
        expires_at: metadata.expires_at,
    })));
    next.run(req).await
}
