//! Loopback load benchmark: the same Axum app served four ways, measured in one run.
//!
//! ```text
//! cargo bench --bench load --features test-util
//! ```
//!
//! 1. `baseline`: the handler with no auth layer (the limit);
//! 2. `hit`: `WachtAuthLayer` applied with `Router::layer`, every token already verified
//!    (cache hits); `hit-app`: the same, the layer wrapped around the whole app instead;
//! 3. `cold`: `WachtAuthLayer`, every request a new token (one gateway call each);
//! 4. `uncached`: an Axum middleware that calls the gateway with reqwest on every request and
//!    caches nothing, the model the official Wacht SDKs document;
//!
//! and `floor`, not tower-wacht: a layer that only inserts a fixed `Principal` into the
//! request extensions, the cost any extension-based auth layer pays before it does any work;
//! plus a stampede: many concurrent requests with one new token, which must cause exactly one
//! gateway call.
//!
//! Layout: this binary is the orchestrator and the load generator. For every run it starts a
//! fresh copy of itself as the server (`--load-serve <mode> ...`) and talks to it over
//! 127.0.0.1. When `taskset` works and two CPUs are allowed, the server is pinned to one CPU
//! and the generator to the other; the FakeGateway runs in the server process on its own
//! thread, pinned to the generator's CPU (the gateway is remote in production, so its CPU is
//! not charged to the app). The generator is a minimal HTTP/1.1 keep-alive client over N
//! connections on one tokio `current_thread` runtime (one request in flight per connection).
//!
//! Knobs (environment): `LOAD_SECS` (5), `LOAD_WARMUP_SECS` (1), `LOAD_CONNS` (64),
//! `LOAD_REPS` (20 interleaved rounds of baseline, floor, hit and hit-app), `LOAD_SLICE_MS`
//! (1000: length of one measured slice in a round), `LOAD_GENERATOR` (`spin`, default: the
//! interleaved runs use a busy-polling generator thread; `epoll`: tokio tasks that sleep in
//! epoll, see `generator::spin` for the difference), `LOAD_SLOW_REPS` (1 run each of cold and
//! uncached at 0 ms), `LOAD_GATEWAY_LATENCIES_MS` ("5,20": extra uncached runs),
//! `LOAD_STAMPEDE` (1000 requests, 0 skips), `LOAD_STAMPEDE_LATENCY_MS` (5),
//! `LOAD_COLD_TOKENS` (default: sized from the uncached run), `LOAD_PIN` (1; 0 disables
//! taskset), `LOAD_SERVER_CPU` / `LOAD_CLIENT_CPU` (first two allowed CPUs),
//! `LOAD_GATEWAY_CPU` (`client`, default, or `server`), `LOAD_BASELINE_TOKEN` (1: the baseline
//! requests carry the same `Authorization` header as the others), `LOAD_MAX_OTHER_LOAD` (10:
//! a run during which other programs used more than this percentage of the server's CPU is
//! discarded and repeated, as is a baseline or hit run that kept the server's CPU less than
//! 97% busy; the same threshold on either CPU, sampled for 0.4 s, holds each run back until
//! other programs quiet down), `LOAD_QUIET_WAIT` (30: longest such wait, in
//! seconds), `LOAD_RETRIES` (4 repeats in total), `LOAD_ONLY` (comma list of `pairs`, `slow`,
//! `latency`, `stampede`; default all).
//!
//! Baseline and the hit modes are measured interleaved: one server per mode stays up with
//! its connections open, and every round drives each server alone for one slice, in an order
//! that reverses every round. Each round gives a ratio to the baseline measured seconds
//! earlier or later; the reported ratio is the median over rounds (see `Bench::interleaved`).
//! The other modes run one at a time for `LOAD_SECS`.
//!
//! Nothing here asserts on timing; it prints what it measured.

use std::collections::BTreeMap;
use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_wacht::body::ResponseBody;
use tower_wacht::testing::{FakeGateway, Fault, TokenGrant};
use tower_wacht::{Principal, WachtAuthConfig, WachtAuthLayer};

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

/// First argument of the server child process.
const SERVE_ARG: &str = "--load-serve";
/// Route served in every mode.
const PATH: &str = "/whoami";
/// OAuth client id of every benchmark token (35 characters, like Wacht's).
const CLIENT_ID: &str = "oc_loadBenchClient00000000000000001";
/// What the handler reports without a principal: same length as [`CLIENT_ID`], so every mode
/// sends an identical response size.
const ANONYMOUS_ID: &str = "anonymous________________________01";
/// Digits in a generated token: `oat_` + kind letter + 42 digits = 47 bytes, the length of a
/// Wacht access token.
const TOKEN_DIGITS: usize = 42;
/// The child exits on its own after this long, whatever happens to the parent.
const CHILD_MAX_LIFETIME: Duration = Duration::from_secs(600);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == SERVE_ARG) {
        if let Err(err) = server::main(&args[pos + 1..]) {
            eprintln!("load server: {err}");
            std::process::exit(1);
        }
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: stay out of test runs.
    if !args.iter().any(|a| a == "--bench") && std::env::var_os("LOAD_FORCE").is_none() {
        println!("load benchmark skipped: run it with `cargo bench --bench load --features test-util`");
        return;
    }
    if let Err(err) = orchestrator::main() {
        eprintln!("load benchmark failed: {err}");
        std::process::exit(1);
    }
}

/// The four app modes, plus the stampede (the `hit` app with one unverified token).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Baseline,
    Hit,
    HitApp,
    Floor,
    Cold,
    Uncached,
    Stampede,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Baseline => "baseline",
            Mode::Hit => "hit",
            Mode::HitApp => "hit-app",
            Mode::Floor => "floor",
            Mode::Cold => "cold",
            Mode::Uncached => "uncached",
            Mode::Stampede => "stampede",
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        [
            Mode::Baseline,
            Mode::Hit,
            Mode::HitApp,
            Mode::Floor,
            Mode::Cold,
            Mode::Uncached,
            Mode::Stampede,
        ]
        .into_iter()
        .find(|m| m.arg() == s)
    }

    fn label(self) -> &'static str {
        match self {
            Mode::Baseline => "1. baseline: no auth layer",
            Mode::Hit => "2. tower-wacht, cache hit (`Router::layer`)",
            Mode::HitApp => "2. tower-wacht, cache hit (layer around the whole app)",
            Mode::Floor => "floor: a layer that only inserts a fixed `Principal` (around the whole app)",
            Mode::Cold => "3. tower-wacht, cold (new token per request)",
            Mode::Uncached => "4. uncached gateway call per request (SDK model)",
            Mode::Stampede => "stampede",
        }
    }
}

/// The benchmark's tokens, derived from (kind, index) so that the server (which registers
/// them with the gateway) and the generator (which sends them) agree without talking.
fn bench_token(kind: char, index: u64) -> String {
    format!("oat_{kind}{index:0width$}", width = TOKEN_DIGITS)
}

fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a non-negative integer").into()),
        _ => Ok(default),
    }
}

// ---------------------------------------------------------------------------------------------
// Server child process
// ---------------------------------------------------------------------------------------------

mod server {
    use super::*;

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
        let (gateway, gateway_tid) = start_gateway(opts.gateway_cpu)?;
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
        for i in 0..opts.cold_tokens {
            gateway.register(&bench_token('c', i), grant.clone());
        }
        gateway.register(&bench_token('s', 0), grant);

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("load-server")
            .enable_all()
            .build()?;
        runtime.block_on(serve(opts, gateway, gateway_tid))
    }

    /// Starts the FakeGateway on its own thread and `current_thread` runtime, pinned to
    /// `cpu` if given. Returns the handle and the thread's id (for CPU accounting).
    fn start_gateway(cpu: Option<usize>) -> Result<(FakeGateway, u32)> {
        let (tx, rx) = mpsc::channel::<Result<(FakeGateway, u32), String>>();
        std::thread::Builder::new().name("fake-gateway".into()).spawn(move || {
            let tid = current_tid().unwrap_or(0);
            if let (Some(cpu), true) = (cpu, tid != 0) {
                // Best effort: the orchestrator reports the plan, and CPU use per thread.
                let _ = Command::new("taskset")
                    .args(["-p", "-c", &cpu.to_string(), &tid.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(err) => {
                    let _ = tx.send(Err(err.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                match FakeGateway::start().await {
                    Ok(gateway) => {
                        let _ = tx.send(Ok((gateway, tid)));
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

    /// The calling thread's kernel id, from `/proc/thread-self` (`<pid>/task/<tid>`).
    fn current_tid() -> Option<u32> {
        let link = std::fs::read_link("/proc/thread-self").ok()?;
        link.file_name()?.to_str()?.parse().ok()
    }

    async fn serve(opts: Opts, gateway: FakeGateway, gateway_tid: u32) -> Result<()> {
        let config = WachtAuthConfig::builder()
            .gateway_url(gateway.url())
            .api_key("sk_test_loadbench")
            .expected_deployment_id(tower_wacht::testing::EXAMPLE_DEPLOYMENT_ID)
            .build()?;
        let app = Router::new().route(PATH, get(whoami));
        let mut outer = None;
        let mut floor = None;
        let app = match opts.mode {
            Mode::Baseline => app,
            Mode::Hit | Mode::HitApp | Mode::Cold | Mode::Stampede => {
                let auth = WachtAuthLayer::new(config)?;
                if matches!(opts.mode, Mode::Hit | Mode::HitApp) {
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

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "READY {addr} {gateway_tid}")?;
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
                let svc = tower::util::MapResponse::new(
                    tower::Layer::layer(&auth, app),
                    |r: Response<ResponseBody<Body>>| r.map(Body::new),
                );
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
}

// ---------------------------------------------------------------------------------------------
// Load generator: minimal HTTP/1.1 keep-alive client
// ---------------------------------------------------------------------------------------------

mod generator {
    use super::*;

    pub(super) const WARMUP: u8 = 0;
    pub(super) const MEASURE: u8 = 1;
    pub(super) const STOP: u8 = 2;

    /// One GET request as bytes; `digits_at` is where the token's digits start, if any.
    pub(super) struct RequestTemplate {
        pub bytes: Vec<u8>,
        pub digits_at: Option<usize>,
    }

    pub(super) fn request(addr: SocketAddr, token: Option<&str>) -> RequestTemplate {
        let mut s = format!("GET {PATH} HTTP/1.1\r\nHost: {addr}\r\n");
        let mut digits_at = None;
        if let Some(token) = token {
            s.push_str("Authorization: Bearer ");
            digits_at = Some(s.len() + token.len() - TOKEN_DIGITS);
            s.push_str(token);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        RequestTemplate {
            bytes: s.into_bytes(),
            digits_at,
        }
    }

    /// Where a connection gets its token from.
    #[derive(Clone)]
    pub(super) enum Tokens {
        /// The same request every time.
        Fixed,
        /// A new cold token per request: `next` is shared by all connections, up to `limit`.
        Fresh {
            next: Arc<AtomicU64>,
            limit: u64,
            exhausted: Arc<AtomicBool>,
        },
    }

    #[derive(Default)]
    pub(super) struct ConnStats {
        pub ok: u64,
        pub failed: u64,
        pub warmup_failed: u64,
        /// Every completed request, warm-up included.
        pub sent: u64,
        /// Latency of each measured request, nanoseconds (saturating at ~4.3 s).
        pub latencies: Vec<u32>,
    }

    fn nanos(d: Duration) -> u32 {
        u32::try_from(d.as_nanos()).unwrap_or(u32::MAX)
    }

    /// Writes `n` as zero-padded decimal into `dst`.
    fn write_digits(dst: &mut [u8], mut n: u64) {
        for b in dst.iter_mut().rev() {
            *b = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }

    /// One keep-alive connection: request, response, repeat, until the phase is STOP.
    pub(super) async fn connection(
        addr: SocketAddr,
        mut template: RequestTemplate,
        tokens: Tokens,
        phase: Arc<AtomicU8>,
    ) -> std::io::Result<ConnStats> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut buf = vec![0u8; 8192];
        let mut stats = ConnStats {
            latencies: Vec::with_capacity(1 << 16),
            ..ConnStats::default()
        };
        loop {
            if phase.load(Ordering::Relaxed) == STOP {
                break;
            }
            if let Tokens::Fresh { next, limit, exhausted } = &tokens {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= *limit {
                    exhausted.store(true, Ordering::Relaxed);
                    break;
                }
                if let Some(at) = template.digits_at {
                    write_digits(&mut template.bytes[at..at + TOKEN_DIGITS], i);
                }
            }
            let started = Instant::now();
            stream.write_all(&template.bytes).await?;
            let status = read_response(&mut stream, &mut buf).await?;
            let elapsed = started.elapsed();
            stats.sent += 1;
            if phase.load(Ordering::Relaxed) == MEASURE {
                if status == 200 {
                    stats.ok += 1;
                } else {
                    stats.failed += 1;
                }
                stats.latencies.push(nanos(elapsed));
            } else if status != 200 {
                stats.warmup_failed += 1;
            }
        }
        Ok(stats)
    }

    /// Gate state: the server's connections send nothing new.
    pub(super) const PAUSE: u8 = 3;

    /// Starts and stops the load on one server while its connections stay open, so several
    /// servers can be driven in turn in short slices (see `Bench::interleaved`).
    pub(super) struct Gate {
        /// `PAUSE`, `WARMUP` (driven, not counted), `MEASURE` or `STOP`.
        pub phase: AtomicU8,
        /// Wakes paused [`gated_connection`]s.
        pub wake: tokio::sync::Notify,
        /// 200 responses completed while `MEASURE`.
        pub ok: AtomicU64,
        /// Other responses completed while `MEASURE`.
        pub failed: AtomicU64,
    }

    impl Gate {
        pub(super) fn new() -> Gate {
            Gate {
                phase: AtomicU8::new(PAUSE),
                wake: tokio::sync::Notify::new(),
                ok: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            }
        }

        pub(super) fn set(&self, phase: u8) {
            self.phase.store(phase, Ordering::Relaxed);
            self.wake.notify_waiters();
        }
    }

    /// `LOAD_GENERATOR=epoll`: one keep-alive connection as a tokio task on the generator's
    /// `current_thread` runtime, sending while its gate is open and waiting (in epoll) while
    /// it is paused; returns the latencies of its measured requests. See [`spin`] for why
    /// this is not the default.
    pub(super) async fn gated_connection(
        addr: SocketAddr,
        request: Vec<u8>,
        gate: Arc<Gate>,
    ) -> std::io::Result<Vec<u32>> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut buf = vec![0u8; 8192];
        let mut latencies = Vec::with_capacity(1 << 16);
        loop {
            // Registered before the check, so a `set` between the two is not missed.
            let opened = gate.wake.notified();
            match gate.phase.load(Ordering::Relaxed) {
                STOP => break,
                PAUSE => {
                    opened.await;
                    continue;
                }
                _ => {}
            }
            let started = Instant::now();
            stream.write_all(&request).await?;
            let status = read_response(&mut stream, &mut buf).await?;
            let elapsed = started.elapsed();
            if gate.phase.load(Ordering::Relaxed) == MEASURE {
                if status == 200 {
                    gate.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    gate.failed.fetch_add(1, Ordering::Relaxed);
                }
                latencies.push(nanos(elapsed));
            }
        }
        Ok(latencies)
    }

    /// One keep-alive connection of [`spin`].
    struct SpinConn {
        server: usize,
        stream: std::net::TcpStream,
        request: Vec<u8>,
        buf: Vec<u8>,
        filled: usize,
        /// When the request in flight was sent; `None`: nothing in flight.
        sent_at: Option<Instant>,
    }

    /// A busy-polling closed-loop generator on the calling thread: one keep-alive connection
    /// per target (server index, address, request bytes), one request in flight on each
    /// connection whose server's gate is open, until every gate is `STOP`. Returns the
    /// measured latencies of each server.
    ///
    /// It never sleeps: with an epoll-driven generator, every response the server sends has
    /// to wake the generator's halted vCPU (an IPI, i.e. a VM exit), and the server pays for
    /// that wake-up in `sock_def_readable` → `_raw_spin_unlock_irqrestore`. Measured with
    /// `perf`, that cost grew with how often the generator was idle, i.e. with how slow the
    /// server was, which inflated the gap between modes; a real server does not pay for
    /// waking its clients.
    pub(super) fn spin(
        targets: Vec<(usize, SocketAddr, Vec<u8>)>,
        gates: &[Arc<Gate>],
    ) -> std::io::Result<Vec<Vec<u32>>> {
        let mut all = Vec::new();
        for (server, addr, request) in targets {
            let stream = std::net::TcpStream::connect(addr)?;
            stream.set_nodelay(true)?;
            stream.set_nonblocking(true)?;
            all.push(SpinConn {
                server,
                stream,
                request,
                buf: vec![0u8; 4096],
                filled: 0,
                sent_at: None,
            });
        }
        let mut latencies: Vec<Vec<u32>> = gates.iter().map(|_| Vec::with_capacity(1 << 20)).collect();
        loop {
            let mut busy = false;
            for c in &mut all {
                let phase = gates[c.server].phase.load(Ordering::Relaxed);
                let Some(sent_at) = c.sent_at else {
                    if phase == PAUSE || phase == STOP {
                        continue;
                    }
                    busy = true;
                    write_all_spinning(&mut c.stream, &c.request)?;
                    c.sent_at = Some(Instant::now());
                    continue;
                };
                busy = true;
                if c.filled == c.buf.len() {
                    c.buf.resize(c.buf.len() * 2, 0);
                }
                match std::io::Read::read(&mut c.stream, &mut c.buf[c.filled..]) {
                    Ok(0) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "server closed the connection",
                        ));
                    }
                    Ok(n) => c.filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
                let Some(status) = complete_response(&c.buf[..c.filled])? else {
                    continue;
                };
                let elapsed = sent_at.elapsed();
                c.filled = 0;
                c.sent_at = None;
                let gate = &gates[c.server];
                if gate.phase.load(Ordering::Relaxed) == MEASURE {
                    if status == 200 {
                        gate.ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        gate.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    latencies[c.server].push(nanos(elapsed));
                }
            }
            if !busy && gates.iter().all(|g| g.phase.load(Ordering::Relaxed) == STOP) {
                return Ok(latencies);
            }
            if !busy {
                // Everything paused between slices: do not burn the CPU the orchestrator's
                // own thread needs to flip the gates.
                std::thread::yield_now();
            }
        }
    }

    /// Writes a small request on a non-blocking socket (it fits in an empty send buffer, so
    /// this practically never loops).
    fn write_all_spinning(stream: &mut std::net::TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            match std::io::Write::write(stream, bytes) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
        let mut filled = 0;
        loop {
            if filled == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            let n = stream.read(&mut buf[filled..]).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
            filled += n;
            if let Some(status) = complete_response(&buf[..filled])? {
                return Ok(status);
            }
        }
    }

    /// The status of the response in `buf` once all of it has arrived (Content-Length framed;
    /// one request in flight per connection, so nothing can follow the body).
    fn complete_response(buf: &[u8]) -> std::io::Result<Option<u16>> {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(err) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, err)),
        };
        let content_length = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "response without Content-Length (the generator supports only that framing)",
                )
            })?;
        Ok((buf.len() >= head_len + content_length).then_some(response.code.unwrap_or(0)))
    }

    pub(super) struct BurstSample {
        pub start: Instant,
        pub end: Instant,
        pub status: u16,
    }

    /// Opens `n` connections, then sends one request on each at the same moment.
    pub(super) async fn burst(addr: SocketAddr, n: usize, token: &str) -> Result<Vec<BurstSample>> {
        let template = Arc::new(request(addr, Some(token)).bytes);
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            streams.push(stream);
        }
        // Let the server accept every connection before the burst.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let barrier = Arc::new(tokio::sync::Barrier::new(n));
        let mut tasks = tokio::task::JoinSet::new();
        for mut stream in streams {
            let barrier = Arc::clone(&barrier);
            let template = Arc::clone(&template);
            tasks.spawn(async move {
                let mut buf = vec![0u8; 4096];
                barrier.wait().await;
                let start = Instant::now();
                stream.write_all(&template).await?;
                let status = read_response(&mut stream, &mut buf).await?;
                Ok::<_, std::io::Error>(BurstSample {
                    start,
                    end: Instant::now(),
                    status,
                })
            });
        }
        let mut samples = Vec::with_capacity(n);
        while let Some(joined) = tasks.join_next().await {
            samples.push(joined??);
        }
        Ok(samples)
    }
}

// ---------------------------------------------------------------------------------------------
// Orchestrator: processes, pinning, measurements, report
// ---------------------------------------------------------------------------------------------

mod orchestrator {
    use super::generator::{self, MEASURE, STOP, Tokens};
    use super::*;

    /// A pinned baseline or hit run keeps the server's CPU at least this busy; less means
    /// the generator (or something else) was the limit.
    const MIN_SATURATED_UTIL: f64 = 0.97;

    struct Knobs {
        secs: u64,
        warmup_secs: u64,
        conns: u64,
        reps: u64,
        slice_ms: u64,
        /// Interleaved runs: busy-polling generator (`LOAD_GENERATOR=spin`, default) or
        /// epoll-driven tokio tasks (`epoll`).
        spin: bool,
        slow_reps: u64,
        latencies_ms: Vec<u64>,
        stampede: u64,
        stampede_latency_ms: u64,
        cold_tokens: Option<u64>,
        baseline_token: bool,
        gateway_on_server_cpu: bool,
        /// A run is "disturbed" when other programs used more than this fraction of the
        /// server's CPU during it.
        max_other_load: f64,
        /// Disturbed runs (or pairs) repeated at most this many times in total.
        retries: u64,
        /// Longest wait before a run for other programs to leave the CPUs idle.
        quiet_wait_secs: u64,
        /// Sections to run (`pairs`, `slow`, `latency`, `stampede`); `None`: all.
        only: Option<Vec<String>>,
    }

    impl Knobs {
        fn from_env() -> Result<Knobs> {
            let latencies_ms = match std::env::var("LOAD_GATEWAY_LATENCIES_MS") {
                Ok(v) => v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse::<u64>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| format!("LOAD_GATEWAY_LATENCIES_MS={v:?}: expected numbers like 5,20"))?,
                Err(_) => vec![5, 20],
            };
            let gateway_cpu = std::env::var("LOAD_GATEWAY_CPU").unwrap_or_else(|_| "client".into());
            let gateway_on_server_cpu = match gateway_cpu.as_str() {
                "client" => false,
                "server" => true,
                other => return Err(format!("LOAD_GATEWAY_CPU={other:?}: expected client or server").into()),
            };
            let spin = match std::env::var("LOAD_GENERATOR").as_deref() {
                Ok("spin") | Err(_) => true,
                Ok("epoll") => false,
                Ok(other) => return Err(format!("LOAD_GENERATOR={other:?}: expected spin or epoll").into()),
            };
            let knobs = Knobs {
                spin,
                secs: env_u64("LOAD_SECS", 5)?.max(1),
                warmup_secs: env_u64("LOAD_WARMUP_SECS", 1)?,
                conns: env_u64("LOAD_CONNS", 64)?.max(1),
                reps: env_u64("LOAD_REPS", 20)?.max(1),
                slice_ms: env_u64("LOAD_SLICE_MS", 1000)?.max(100),
                slow_reps: env_u64("LOAD_SLOW_REPS", 1)?.max(1),
                latencies_ms,
                stampede: env_u64("LOAD_STAMPEDE", 1000)?,
                stampede_latency_ms: env_u64("LOAD_STAMPEDE_LATENCY_MS", 5)?,
                cold_tokens: match std::env::var("LOAD_COLD_TOKENS") {
                    Ok(_) => Some(env_u64("LOAD_COLD_TOKENS", 0)?),
                    Err(_) => None,
                },
                baseline_token: env_u64("LOAD_BASELINE_TOKEN", 1)? != 0,
                gateway_on_server_cpu,
                max_other_load: env_u64("LOAD_MAX_OTHER_LOAD", 10)? as f64 / 100.0,
                retries: env_u64("LOAD_RETRIES", 4)?,
                quiet_wait_secs: env_u64("LOAD_QUIET_WAIT", 30)?,
                only: std::env::var("LOAD_ONLY").ok().map(|v| {
                    v.split(',')
                        .map(|x| x.trim().to_owned())
                        .filter(|x| !x.is_empty())
                        .collect()
                }),
            };
            Ok(knobs)
        }
    }

    /// Which CPUs the processes run on, or why they are not pinned.
    struct Pinning {
        server_cpu: Option<usize>,
        client_cpu: Option<usize>,
        note: String,
    }

    fn allowed_cpus() -> Vec<usize> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let Some(list) = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(str::trim)
        else {
            return Vec::new();
        };
        let mut cpus = Vec::new();
        for part in list.split(',') {
            let mut bounds = part.splitn(2, '-').map(|s| s.trim().parse::<usize>());
            match (bounds.next(), bounds.next()) {
                (Some(Ok(a)), Some(Ok(b))) => cpus.extend(a..=b),
                (Some(Ok(a)), None) => cpus.push(a),
                _ => {}
            }
        }
        cpus
    }

    fn plan_pinning() -> Result<Pinning> {
        let unpinned = |note: String| Pinning {
            server_cpu: None,
            client_cpu: None,
            note,
        };
        if env_u64("LOAD_PIN", 1)? == 0 {
            return Ok(unpinned("not pinned (LOAD_PIN=0)".into()));
        }
        let cpus = allowed_cpus();
        let server = match std::env::var("LOAD_SERVER_CPU") {
            Ok(_) => Some(env_u64("LOAD_SERVER_CPU", 0)? as usize),
            Err(_) => cpus.first().copied(),
        };
        let client = match std::env::var("LOAD_CLIENT_CPU") {
            Ok(_) => Some(env_u64("LOAD_CLIENT_CPU", 0)? as usize),
            Err(_) => cpus.get(1).copied(),
        };
        let (Some(server), Some(client)) = (server, client) else {
            return Ok(unpinned(format!(
                "not pinned: fewer than 2 CPUs allowed ({cpus:?}); server and generator share the machine"
            )));
        };
        let pinned_self = Command::new("taskset")
            .args(["-a", "-p", "-c", &client.to_string(), &std::process::id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match pinned_self {
            Ok(s) if s.success() => Ok(Pinning {
                server_cpu: Some(server),
                client_cpu: Some(client),
                note: format!("server on CPU {server}, load generator on CPU {client} (taskset)"),
            }),
            Ok(s) => Ok(unpinned(format!("not pinned: taskset failed ({s})"))),
            Err(e) => Ok(unpinned(format!("not pinned: taskset not available ({e})"))),
        }
    }

    /// A running server child.
    struct ServerProc {
        child: Child,
        stdin: Option<ChildStdin>,
        lines: mpsc::Receiver<String>,
        addr: SocketAddr,
        gateway_tid: u32,
    }

    impl ServerProc {
        fn start(
            mode: Mode,
            latency_ms: u64,
            hit_tokens: u64,
            cold_tokens: u64,
            pin: &Pinning,
            gateway_cpu: Option<usize>,
        ) -> Result<ServerProc> {
            let exe = std::env::current_exe()?;
            let mut cmd = match pin.server_cpu {
                Some(cpu) => {
                    let mut c = Command::new("taskset");
                    c.arg("-c").arg(cpu.to_string()).arg(&exe);
                    c
                }
                None => Command::new(&exe),
            };
            cmd.arg(SERVE_ARG)
                .arg(mode.arg())
                .arg(latency_ms.to_string())
                .arg(hit_tokens.to_string())
                .arg(cold_tokens.to_string())
                .arg(gateway_cpu.map_or_else(|| "-".to_owned(), |c| c.to_string()))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            let mut child = cmd.spawn()?;
            let stdin = child.stdin.take();
            let stdout = child.stdout.take().ok_or("no stdout")?;
            let (tx, lines) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            let mut proc = ServerProc {
                child,
                stdin,
                lines,
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                gateway_tid: 0,
            };
            let ready = proc
                .lines
                .recv_timeout(Duration::from_secs(120))
                .map_err(|_| format!("{} server did not start", mode.arg()))?;
            let mut parts = ready.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some("READY"), Some(addr), Some(tid)) => {
                    proc.addr = addr.parse()?;
                    proc.gateway_tid = tid.parse()?;
                }
                _ => return Err(format!("unexpected server line {ready:?}").into()),
            }
            Ok(proc)
        }

        fn pid(&self) -> u32 {
            self.child.id()
        }

        fn gateway_calls(&mut self) -> Result<u64> {
            let stdin = self.stdin.as_mut().ok_or("server stdin closed")?;
            writeln!(stdin, "calls")?;
            stdin.flush()?;
            let line = self.lines.recv_timeout(Duration::from_secs(10))?;
            Ok(line
                .strip_prefix("CALLS ")
                .ok_or_else(|| format!("unexpected server line {line:?}"))?
                .parse()?)
        }

        /// Server-side CPU time so far (ns): (all threads but the gateway's, the gateway's).
        fn cpu_ns(&self) -> Option<(u64, u64)> {
            task_cpu_ns(&self.pid().to_string(), self.gateway_tid)
        }
    }

    /// CPU time (ns) of a process's threads from `/proc/<pid>/task/*/schedstat`:
    /// (all threads but `tid`, thread `tid`).
    fn task_cpu_ns(pid: &str, tid: u32) -> Option<(u64, u64)> {
        let mut others = 0;
        let mut one = 0;
        for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
            // A thread may end between listing and reading: skip it.
            let Some(t) = entry.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
                continue;
            };
            let Some(ns) = std::fs::read_to_string(entry.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
            else {
                continue;
            };
            if t == tid {
                one += ns;
            } else {
                others += ns;
            }
        }
        Some((others, one))
    }

    /// Busy fraction of each pinned CPU over `window` (`None` when not pinned).
    fn cpu_busy(pin: &Pinning, window: Duration) -> Option<(f64, f64)> {
        let (server, client) = (pin.server_cpu?, pin.client_cpu?);
        let a = (cpu_stat(Some(server))?, cpu_stat(Some(client))?);
        std::thread::sleep(window);
        let b = (cpu_stat(Some(server))?, cpu_stat(Some(client))?);
        let frac = |(_, b0, t0): CpuStat, (_, b1, t1): CpuStat| {
            if t1 > t0 {
                b1.saturating_sub(b0) as f64 / (t1 - t0) as f64
            } else {
                0.0
            }
        };
        Some((frac(a.0, b.0), frac(a.1, b.1)))
    }

    /// Before a run: waits (up to `LOAD_QUIET_WAIT` seconds) until other programs leave both
    /// CPUs nearly idle.
    fn wait_for_quiet(knobs: &Knobs, pin: &Pinning) {
        let started = Instant::now();
        let mut told = false;
        while let Some((server, client)) = cpu_busy(pin, Duration::from_millis(400)) {
            if server.max(client) <= knobs.max_other_load {
                break;
            }
            if started.elapsed() >= Duration::from_secs(knobs.quiet_wait_secs) {
                eprintln!(
                    "  (CPUs still busy with other programs after {} s: running anyway)",
                    knobs.quiet_wait_secs
                );
                break;
            }
            if !told {
                eprintln!(
                    "  (other programs are using the CPUs: {:.0}% / {:.0}%; waiting up to {} s)",
                    server * 100.0,
                    client * 100.0,
                    knobs.quiet_wait_secs
                );
                told = true;
            }
        }
    }

    impl Drop for ServerProc {
        fn drop(&mut self) {
            if let Some(mut stdin) = self.stdin.take() {
                let _ = writeln!(stdin, "quit");
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                match self.child.try_wait() {
                    Ok(Some(_)) => return,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    _ => break,
                }
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// What the CPUs did over one measured window (a run or a slice).
    struct CpuUse {
        /// The server's threads other than the gateway's, as a fraction of one CPU.
        server_util: Option<f64>,
        /// The FakeGateway thread, as a fraction of one CPU.
        gateway_util: Option<f64>,
        server_us_per_req: Option<f64>,
        steal: Option<f64>,
        /// Busy fraction of the server's CPU not explained by the server process: other
        /// programs competing for it.
        foreign: Option<f64>,
        /// The same for the load generator's CPU.
        foreign_client: Option<f64>,
    }

    /// Utilisation, cost per request and other programs' load over one window, from
    /// before/after samples of the server's CPU time (other threads, gateway thread), this
    /// process's CPU time and `/proc/stat` of both CPUs. `gateway_on_server_cpu`: which CPU
    /// the gateway thread's time is charged to.
    #[allow(clippy::too_many_arguments)]
    fn cpu_use(
        secs: f64,
        requests: u64,
        cpu: Option<((u64, u64), (u64, u64))>,
        own: Option<((u64, u64), (u64, u64))>,
        stat: Option<(CpuStat, CpuStat)>,
        cstat: Option<(CpuStat, CpuStat)>,
        pinned: bool,
        gateway_on_server_cpu: bool,
    ) -> CpuUse {
        let server_util = cpu.map(|((s0, _), (s1, _))| s1.saturating_sub(s0) as f64 / 1e9 / secs);
        let gateway_util = cpu.map(|((_, g0), (_, g1))| g1.saturating_sub(g0) as f64 / 1e9 / secs);
        let server_us_per_req = cpu
            .filter(|_| requests > 0)
            .map(|((s0, _), (s1, _))| s1.saturating_sub(s0) as f64 / 1e3 / requests as f64);
        let steal = stat
            .filter(|((_, _, t0), (_, _, t1))| t1 > t0)
            .map(|((s0, _, t0), (s1, _, t1))| s1.saturating_sub(s0) as f64 / (t1 - t0) as f64);
        // Busy time of each CPU minus what this benchmark's own threads used there.
        let gateway_share = gateway_util.unwrap_or(0.0);
        let (gw_on_server, gw_on_client) = if gateway_on_server_cpu {
            (gateway_share, 0.0)
        } else {
            (0.0, gateway_share)
        };
        let generator_util = own.map(|((a0, b0), (a1, b1))| (a1 + b1).saturating_sub(a0 + b0) as f64 / 1e9 / secs);
        let busy = |st: Option<(CpuStat, CpuStat)>| {
            st.filter(|((_, _, t0), (_, _, t1))| t1 > t0 && pinned)
                .map(|((_, b0, t0), (_, b1, t1))| b1.saturating_sub(b0) as f64 / (t1 - t0) as f64)
        };
        CpuUse {
            server_util,
            gateway_util,
            server_us_per_req,
            steal,
            foreign: busy(stat)
                .zip(server_util)
                .map(|(b, own)| (b - own - gw_on_server).max(0.0)),
            foreign_client: busy(cstat)
                .zip(generator_util)
                .map(|(b, own)| (b - own - gw_on_client).max(0.0)),
        }
    }

    /// `/proc/stat` counters of one CPU (or all): (steal, busy, total) in clock ticks.
    type CpuStat = (u64, u64, u64);

    fn cpu_stat(cpu: Option<usize>) -> Option<CpuStat> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let name = cpu.map_or_else(|| "cpu".to_owned(), |c| format!("cpu{c}"));
        let line = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|f| f.parse().ok())
            .collect();
        if fields.len() < 8 {
            return None;
        }
        // user nice system idle iowait irq softirq steal
        let total: u64 = fields.iter().sum();
        Some((fields[7], total - fields[3] - fields[4], total))
    }

    struct RunResult {
        mode: Mode,
        /// Measured by [`Bench::interleaved`] (slices) rather than as a separate run.
        interleaved: bool,
        latency_ms: u64,
        /// Requests completed in the whole run (warm-up included), for calls per request.
        sent: u64,
        discarded: bool,
        secs: f64,
        rps: f64,
        p50: Duration,
        p99: Duration,
        /// For an interleaved row: the median of each figure over the mode's slices.
        used: CpuUse,
        gateway_calls: u64,
        note: String,
    }

    impl CpuUse {
        /// The larger share of either CPU taken by other programs.
        fn other_load(&self) -> Option<f64> {
            match (self.foreign, self.foreign_client) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            }
        }
    }

    fn percentile(sorted: &[u32], q: f64) -> Duration {
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        Duration::from_nanos(u64::from(sorted[rank - 1]))
    }

    struct Bench {
        knobs: Knobs,
        pin: Pinning,
        runtime: tokio::runtime::Runtime,
    }

    impl Bench {
        fn gateway_cpu(&self) -> Option<usize> {
            if self.knobs.gateway_on_server_cpu {
                self.pin.server_cpu
            } else {
                self.pin.client_cpu
            }
        }

        fn run(&self, mode: Mode, latency_ms: u64, cold_tokens: u64) -> Result<RunResult> {
            let k = &self.knobs;
            wait_for_quiet(k, &self.pin);
            let mut server = ServerProc::start(mode, latency_ms, k.conns, cold_tokens, &self.pin, self.gateway_cpu())?;
            let addr = server.addr;
            let phase = Arc::new(AtomicU8::new(generator::WARMUP));
            let exhausted = Arc::new(AtomicBool::new(false));
            let fresh = Tokens::Fresh {
                next: Arc::new(AtomicU64::new(0)),
                limit: cold_tokens,
                exhausted: Arc::clone(&exhausted),
            };
            let calls_before = server.gateway_calls()?;
            let outcome = self.runtime.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for c in 0..k.conns {
                    let (token, tokens) = match mode {
                        Mode::Baseline if !k.baseline_token => (None, Tokens::Fixed),
                        Mode::Cold => (Some(bench_token('c', 0)), fresh.clone()),
                        _ => (Some(bench_token('h', c)), Tokens::Fixed),
                    };
                    let template = generator::request(addr, token.as_deref());
                    tasks.spawn(generator::connection(addr, template, tokens, Arc::clone(&phase)));
                }
                tokio::time::sleep(Duration::from_secs(k.warmup_secs)).await;
                let cpu0 = server.cpu_ns();
                let own0 = task_cpu_ns("self", 0);
                let stat0 = cpu_stat(self.pin.server_cpu);
                let cstat0 = cpu_stat(self.pin.client_cpu);
                phase.store(MEASURE, Ordering::Relaxed);
                let t0 = Instant::now();
                let deadline = t0 + Duration::from_secs(k.secs);
                while Instant::now() < deadline && !exhausted.load(Ordering::Relaxed) && !tasks.is_empty() {
                    tokio::time::sleep(Duration::from_millis(50).min(deadline - Instant::now())).await;
                }
                phase.store(STOP, Ordering::Relaxed);
                let secs = t0.elapsed().as_secs_f64();
                let cpu1 = server.cpu_ns();
                let own1 = task_cpu_ns("self", 0);
                let stat1 = cpu_stat(self.pin.server_cpu);
                let cstat1 = cpu_stat(self.pin.client_cpu);
                let mut all = Vec::new();
                let (mut ok, mut failed, mut warm_failed, mut sent, mut conn_errors) = (0, 0, 0, 0, Vec::new());
                while let Some(joined) = tasks.join_next().await {
                    match joined {
                        Ok(Ok(stats)) => {
                            ok += stats.ok;
                            failed += stats.failed;
                            warm_failed += stats.warmup_failed;
                            sent += stats.sent;
                            all.extend_from_slice(&stats.latencies);
                        }
                        Ok(Err(e)) => conn_errors.push(e.to_string()),
                        Err(e) => conn_errors.push(e.to_string()),
                    }
                }
                (
                    secs,
                    cpu0.zip(cpu1),
                    own0.zip(own1),
                    stat0.zip(stat1),
                    cstat0.zip(cstat1),
                    all,
                    ok,
                    failed,
                    warm_failed,
                    sent,
                    conn_errors,
                )
            });
            let (secs, cpu, own, stat, cstat, mut latencies, ok, failed, warm_failed, sent, conn_errors) = outcome;
            let calls = server.gateway_calls()?.saturating_sub(calls_before);
            drop(server);
            latencies.sort_unstable();
            let requests = ok + failed;
            let mut note = Vec::new();
            if failed + warm_failed > 0 {
                note.push(format!("{} non-200 responses", failed + warm_failed));
            }
            if !conn_errors.is_empty() {
                note.push(format!("{} connection errors: {}", conn_errors.len(), conn_errors[0]));
            }
            if exhausted.load(Ordering::Relaxed) {
                note.push(format!("cold tokens ran out after {secs:.1} s"));
            }
            let used = cpu_use(
                secs,
                requests,
                cpu,
                own,
                stat,
                cstat,
                self.pin.server_cpu.is_some(),
                self.knobs.gateway_on_server_cpu,
            );
            Ok(RunResult {
                mode,
                interleaved: false,
                latency_ms,
                sent,
                discarded: false,
                secs,
                rps: ok as f64 / secs,
                p50: percentile(&latencies, 0.50),
                p99: percentile(&latencies, 0.99),
                used,
                gateway_calls: calls,
                note: note.join("; "),
            })
        }
    }

    fn other_load(r: &RunResult) -> String {
        match (r.used.foreign, r.used.foreign_client) {
            (None, None) => "n/a".to_owned(),
            (a, b) => format!(
                "{} / {}",
                fmt_opt(a, |s| format!("{:.0}%", s * 100.0)),
                fmt_opt(b, |s| format!("{:.0}%", s * 100.0))
            ),
        }
    }

    fn fmt_ms(d: Duration) -> String {
        format!("{:.3}", d.as_secs_f64() * 1e3)
    }

    fn fmt_opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
        v.map_or_else(|| "n/a".to_owned(), f)
    }

    fn print_run(r: &RunResult) {
        eprintln!(
            "  {:<9} gw {:>2} ms: {:>9.0} req/s  p50 {:>7} ms  p99 {:>7} ms  server CPU {:>5} ({} µs/req)  gateway thread {:>5}  steal {:>5}  other load {:>9}  gateway calls {}{}",
            r.mode.arg(),
            r.latency_ms,
            r.rps,
            fmt_ms(r.p50),
            fmt_ms(r.p99),
            fmt_opt(r.used.server_util, |u| format!("{:.0}%", u * 100.0)),
            fmt_opt(r.used.server_us_per_req, |u| format!("{u:.1}")),
            fmt_opt(r.used.gateway_util, |u| format!("{:.0}%", u * 100.0)),
            fmt_opt(r.used.steal, |s| format!("{:.1}%", s * 100.0)),
            other_load(r),
            r.gateway_calls,
            if r.note.is_empty() {
                String::new()
            } else {
                format!("  [{}]", r.note)
            },
        );
    }

    fn median(values: &mut [f64]) -> f64 {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        }
    }

    fn min_max(values: &[f64]) -> (f64, f64) {
        values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
    }

    fn loadavg() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_owned))
            .unwrap_or_else(|| "n/a".to_owned())
    }

    fn machine_info(pin: &Pinning, knobs: &Knobs, nproc: usize) -> Vec<String> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, m)| m.trim())
            })
            .unwrap_or("unknown")
            .to_owned();
        let sha_ni = cpuinfo.lines().any(|l| l.starts_with("flags") && l.contains(" sha_ni"));
        let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("-V")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map_or_else(
                || "unknown".to_owned(),
                |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
            );
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let gateway_where = if knobs.gateway_on_server_cpu {
            "on the server's CPU (LOAD_GATEWAY_CPU=server)"
        } else {
            "on the generator's CPU (LOAD_GATEWAY_CPU=client)"
        };
        vec![
            format!(
                "- CPU: {model} ({nproc} CPUs available, SHA-NI: {})",
                if sha_ni { "yes" } else { "no" }
            ),
            format!("- kernel {}, {rustc}, profile `bench`", kernel.trim()),
            format!(
                "- 1-minute load average before the runs: {} (anything well above 0 means other programs compete for the CPUs)",
                loadavg()
            ),
            format!("- pinning: {}", pin.note),
            format!(
                "- server: 1 tokio worker; FakeGateway in the server process on its own thread, {}",
                if pin.server_cpu.is_some() {
                    gateway_where
                } else {
                    "unpinned"
                }
            ),
            format!(
                "- load: {} keep-alive HTTP/1.1 connections per server, 1 request in flight each (closed loop), generated in-process on one CPU; baseline/floor/hit modes: {} interleaved rounds of one {} ms slice each (+100 ms ramp) after {} s warm-up each, generator {}; other modes: {} s warm-up + {} s measured per run, generator on a tokio current_thread runtime",
                knobs.conns,
                knobs.reps,
                knobs.slice_ms,
                knobs.warmup_secs,
                if knobs.spin {
                    "busy-polling (LOAD_GENERATOR=spin)"
                } else {
                    "on a tokio current_thread runtime (LOAD_GENERATOR=epoll)"
                },
                knobs.warmup_secs,
                knobs.secs
            ),
        ]
    }

    /// Runs one configuration; a run disturbed by other programs (see [`RunResult::foreign`])
    /// is marked discarded and repeated while the retry budget lasts.
    struct Session {
        bench: Bench,
        results: Vec<RunResult>,
        retries_left: u64,
    }

    impl Session {
        /// Other programs took more than the threshold of a CPU, or (baseline and hit, which
        /// must saturate the server) the server was not kept busy.
        fn disturbed(&self, r: &RunResult) -> bool {
            let starved = matches!(r.mode, Mode::Baseline | Mode::Hit)
                && self.bench.pin.server_cpu.is_some()
                && r.used.server_util.is_some_and(|u| u < MIN_SATURATED_UTIL);
            starved || r.used.other_load().is_some_and(|f| f > self.bench.knobs.max_other_load)
        }

        fn run(&mut self, mode: Mode, latency_ms: u64, cold_tokens: u64) -> Result<usize> {
            loop {
                let mut r = self.bench.run(mode, latency_ms, cold_tokens)?;
                print_run(&r);
                if self.disturbed(&r) && self.retries_left > 0 {
                    self.retries_left -= 1;
                    r.discarded = true;
                    self.results.push(r);
                    eprintln!("  (disturbed by other programs: discarded, repeating)");
                    continue;
                }
                self.results.push(r);
                return Ok(self.results.len() - 1);
            }
        }
    }

    pub(super) fn main() -> Result<()> {
        let knobs = Knobs::from_env()?;
        // Before pinning, which would narrow what `available_parallelism` sees.
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        let pin = plan_pinning()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let started = Instant::now();
        println!("# tower-wacht loopback load benchmark\n");
        for line in machine_info(&pin, &knobs, nproc) {
            println!("{line}");
        }
        println!();
        let retries_left = knobs.retries;
        let mut s = Session {
            bench: Bench { knobs, pin, runtime },
            results: Vec::new(),
            retries_left,
        };

        eprintln!("runs (progress; the tables follow on stdout):");
        let (reps, slow_reps, latencies, only) = {
            let k = &s.bench.knobs;
            (k.reps, k.slow_reps, k.latencies_ms.clone(), k.only.clone())
        };
        let wants = |section: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == section));
        // 1 and both placements of 2, interleaved in short slices.
        let mut pairs = Vec::new();
        let mut app_pairs = Vec::new();
        let mut floor_pairs = Vec::new();
        let mut disturbed_rounds = 0;
        if wants("pairs") {
            let il = s
                .bench
                .interleaved(&[Mode::Baseline, Mode::Floor, Mode::Hit, Mode::HitApp], reps)?;
            for r in il.results {
                print_run(&r);
                s.results.push(r);
            }
            let of = |m: &BTreeMap<Mode, f64>, mode: Mode| Some((*m.get(&Mode::Baseline)?, *m.get(&mode)?));
            pairs = il.rounds.iter().filter_map(|m| of(m, Mode::Hit)).collect();
            app_pairs = il.rounds.iter().filter_map(|m| of(m, Mode::HitApp)).collect();
            floor_pairs = il.rounds.iter().filter_map(|m| of(m, Mode::Floor)).collect();
            disturbed_rounds = il.disturbed_rounds;
        }
        // 4 then 3 at 0 ms; the uncached rate sizes the cold token set.
        let mut uncached_rps = Vec::new();
        let mut cold_rps = Vec::new();
        let mut slow_hit_rps = Vec::new();
        if wants("slow") {
            for _ in 0..slow_reps {
                // A hit run measured like the uncached and cold ones (own process, tokio
                // generator), for 2/4.
                let i = s.run(Mode::Hit, 0, 0)?;
                slow_hit_rps.push(s.results[i].rps);
                let i = s.run(Mode::Uncached, 0, 0)?;
                uncached_rps.push(s.results[i].rps);
                let k = &s.bench.knobs;
                let cold_tokens = k.cold_tokens.unwrap_or_else(|| {
                    let max = uncached_rps.iter().copied().fold(0.0, f64::max);
                    let per_run = (max * 1.6 * (k.secs + k.warmup_secs) as f64) as u64;
                    per_run.clamp(50_000, 2_000_000)
                });
                let i = s.run(Mode::Cold, 0, cold_tokens)?;
                cold_rps.push(s.results[i].rps);
            }
        }
        let mut uncached_slow: Vec<(u64, f64)> = Vec::new();
        if wants("latency") {
            for &ms in &latencies {
                let i = s.run(Mode::Uncached, ms, 0)?;
                uncached_slow.push((ms, s.results[i].rps));
            }
        }
        let bursts = if wants("stampede") && s.bench.knobs.stampede > 0 {
            s.bench.bursts()?
        } else {
            Vec::new()
        };
        report(
            &s,
            &pairs,
            &app_pairs,
            &floor_pairs,
            disturbed_rounds,
            &slow_hit_rps,
            &uncached_rps,
            &cold_rps,
            &uncached_slow,
            &bursts,
        );
        println!(
            "Total time: {:.0} s; 1-minute load average at the end: {}.",
            started.elapsed().as_secs_f64(),
            loadavg()
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        s: &Session,
        pairs: &[(f64, f64)],
        app_pairs: &[(f64, f64)],
        floor_pairs: &[(f64, f64)],
        disturbed_rounds: usize,
        slow_hit_rps: &[f64],
        uncached_rps: &[f64],
        cold_rps: &[f64],
        uncached_slow: &[(u64, f64)],
        bursts: &[BurstResult],
    ) {
        let k = &s.bench.knobs;
        let kept: Vec<&RunResult> = s.results.iter().filter(|r| !r.discarded).collect();

        println!("## Results\n");
        println!(
            "| mode | measured in | gateway latency | runs | requests/s (median) | p50 ms | p99 ms | server CPU µs/req | gateway calls/request |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        let mut groups: BTreeMap<(bool, Mode, u64), Vec<&RunResult>> = BTreeMap::new();
        for r in &kept {
            groups
                .entry((!r.interleaved, r.mode, r.latency_ms))
                .or_default()
                .push(r);
        }
        for ((separate, mode, ms), runs) in &groups {
            let mut rps: Vec<f64> = runs.iter().map(|r| r.rps).collect();
            let mut p50: Vec<f64> = runs.iter().map(|r| r.p50.as_secs_f64() * 1e3).collect();
            let mut p99: Vec<f64> = runs.iter().map(|r| r.p99.as_secs_f64() * 1e3).collect();
            let mut cpu: Vec<f64> = runs.iter().filter_map(|r| r.used.server_us_per_req).collect();
            let sent: u64 = runs.iter().map(|r| r.sent).sum();
            let calls: u64 = runs.iter().map(|r| r.gateway_calls).sum();
            let gw = match mode {
                Mode::Baseline | Mode::Floor => "none".to_owned(),
                Mode::Hit | Mode::HitApp => "only on ttl expiry".to_owned(),
                _ => format!("{ms} ms"),
            };
            println!(
                "| {} | {} | {gw} | {} | {:.0} | {:.3} | {:.3} | {} | {} |",
                mode.label(),
                if *separate {
                    "separate runs"
                } else {
                    "interleaved slices"
                },
                runs.len(),
                median(&mut rps),
                median(&mut p50),
                median(&mut p99),
                if cpu.is_empty() {
                    "n/a".to_owned()
                } else {
                    format!("{:.2}", median(&mut cpu))
                },
                if sent == 0 {
                    "n/a".to_owned()
                } else {
                    format!("{:.3}", calls as f64 / sent as f64)
                },
            );
        }
        println!();

        println!("| ratio | value | range | how |");
        println!("|---|---|---|---|");
        // 2/4 compares runs measured the same way: separate processes, tokio generator.
        let hit_rps = slow_hit_rps.to_vec();
        let hit_median = median(&mut hit_rps.clone());
        let (hit_lo, hit_hi) = min_max(&hit_rps);
        for (what, pairs) in [
            ("2/1 cache hit ÷ baseline, `Router::layer`", pairs),
            ("2/1 cache hit ÷ baseline, layer around the whole app", app_pairs),
            ("floor ÷ baseline (a layer that only inserts a principal)", floor_pairs),
        ] {
            if pairs.is_empty() {
                continue;
            }
            let ratios: Vec<f64> = pairs.iter().map(|(b, h)| h / b).collect();
            let (lo, hi) = min_max(&ratios);
            let mut sorted = ratios.clone();
            sorted.sort_by(f64::total_cmp);
            let quartile = |q: f64| sorted[((q * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)];
            println!(
                "| {what} | **{:.3}** | {lo:.3}–{hi:.3} (middle half {:.3}–{:.3}) | median of {} interleaved rounds of {} ms slices ({disturbed_rounds} disturbed rounds left out); per round: {} |",
                median(&mut ratios.clone()),
                quartile(0.25),
                quartile(0.75),
                ratios.len(),
                k.slice_ms,
                ratios.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>().join(", ")
            );
        }
        let u0 = median(&mut uncached_rps.to_vec());
        if !hit_rps.is_empty() && !uncached_rps.is_empty() {
            println!(
                "| 2/4 cache hit ÷ uncached, gateway 0 ms | **{:.1}×** | {:.1}–{:.1}× | median hit {hit_median:.0} ÷ uncached {u0:.0} req/s; range over the hit runs |",
                hit_median / u0,
                hit_lo / u0,
                hit_hi / u0
            );
        }
        if !hit_rps.is_empty() {
            for (ms, rps) in uncached_slow {
                println!(
                    "| 2/4 cache hit ÷ uncached, gateway +{ms} ms | **{:.0}×** | {:.0}–{:.0}× | uncached {rps:.0} req/s over {} connections (latency-bound: at most {} ÷ {ms} ms = {:.0} req/s) |",
                    hit_median / rps,
                    hit_lo / rps,
                    hit_hi / rps,
                    k.conns,
                    k.conns,
                    k.conns as f64 / (*ms as f64 / 1e3)
                );
            }
        }
        if !cold_rps.is_empty() && !uncached_rps.is_empty() {
            println!(
                "| 3/4 cold ÷ uncached, gateway 0 ms | {:.2} | | every request a miss, against no cache at all |",
                median(&mut cold_rps.to_vec()) / u0
            );
        }
        println!();

        if !bursts.is_empty() {
            println!("## Stampede\n");
            println!(
                "{} requests released together, one per connection, all with the same token. The first two rows are references for the same burst.\n",
                bursts[0].n
            );
            println!(
                "| burst | gateway latency | gateway calls | 200 responses | p50 ms | p99 ms | max ms | sends spread over ms | first send → last response ms |"
            );
            println!("|---|---|---|---|---|---|---|---|---|");
            for b in bursts {
                println!(
                    "| {} | {} | **{}** | {}/{} | {} | {} | {} | {} | {} |",
                    b.label,
                    if b.mode == Mode::Stampede {
                        format!("{} ms", k.stampede_latency_ms)
                    } else {
                        "n/a".to_owned()
                    },
                    b.calls,
                    b.ok,
                    b.n,
                    fmt_ms(b.p50),
                    fmt_ms(b.p99),
                    fmt_ms(b.max),
                    fmt_ms(b.send_spread),
                    fmt_ms(b.makespan)
                );
            }
            println!();
        }

        println!("## Runs\n");
        println!(
            "| # | mode | gateway ms | measured s | requests/s | p50 ms | p99 ms | server CPU | server µs/req | gateway thread CPU | steal (server CPU) | other programs' load (server / generator CPU) | gateway calls | notes |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for (i, r) in s.results.iter().enumerate() {
            let mut note = r.note.clone();
            if r.discarded {
                if !note.is_empty() {
                    note.push_str("; ");
                }
                note.push_str("discarded: disturbed");
            }
            println!(
                "| {} | {} | {} | {:.1} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                i + 1,
                r.mode.arg(),
                r.latency_ms,
                r.secs,
                r.rps,
                fmt_ms(r.p50),
                fmt_ms(r.p99),
                fmt_opt(r.used.server_util, |u| format!("{:.0}%", u * 100.0)),
                fmt_opt(r.used.server_us_per_req, |u| format!("{u:.2}")),
                fmt_opt(r.used.gateway_util, |u| format!("{:.0}%", u * 100.0)),
                fmt_opt(r.used.steal, |s| format!("{:.1}%", s * 100.0)),
                other_load(r),
                r.gateway_calls,
                note
            );
        }
        println!();
        let least_busy = kept
            .iter()
            .filter(|r| matches!(r.mode, Mode::Baseline | Mode::Hit))
            .filter_map(|r| r.used.server_util)
            .fold(f64::INFINITY, f64::min);
        if least_busy.is_finite() && least_busy < 0.9 {
            println!(
                "Warning: in some baseline/hit run the server used only {:.0}% of its CPU: the load generator or other programs were the limit there, not the server.\n",
                least_busy * 100.0
            );
        }
        let busiest = kept.iter().filter_map(|r| r.used.other_load()).fold(0.0, f64::max);
        if busiest > k.max_other_load {
            println!(
                "Warning: other programs used up to {:.0}% of a CPU during a kept run (column \"other programs' load\"; the retry budget ran out). Those runs measure the machine, not the library: re-run on a quiet machine.\n",
                busiest * 100.0
            );
        }
    }

    /// Soft limit on open files, from `/proc/self/limits`.
    fn open_files_limit() -> Option<u64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line["Max open files".len()..].split_whitespace().next()?.parse().ok()
    }

    struct BurstResult {
        label: &'static str,
        mode: Mode,
        n: usize,
        ok: usize,
        calls: u64,
        p50: Duration,
        p99: Duration,
        max: Duration,
        makespan: Duration,
        /// First send to last send: how "at once" the generator managed to fire.
        send_spread: Duration,
    }

    /// One slice of an interleaved run: one server driven alone for `LOAD_SLICE_MS`.
    struct Slice {
        secs: f64,
        ok: u64,
        failed: u64,
        used: CpuUse,
    }

    /// Result of [`Bench::interleaved`].
    struct Interleaved {
        /// One row per mode, over all its slices.
        results: Vec<RunResult>,
        /// Requests/s of every mode in each round that no other program disturbed.
        rounds: Vec<BTreeMap<Mode, f64>>,
        /// Rounds left out because other programs took a CPU or the server was not saturated.
        disturbed_rounds: usize,
    }

    impl Bench {
        /// Starts one server per mode and keeps all of them (and their connections) up, then
        /// drives them in turn, one slice each per round, the order reversed every round
        /// (A B C, C B A, ...). Paused connections stay open and idle, so a slice measures
        /// one server alone, and every mode is measured seconds apart from the others, under
        /// the same machine conditions: this VM's speed drifts by ±10% over tens of seconds,
        /// which separate multi-second runs cannot tell apart from the effect being measured.
        fn interleaved(&self, modes: &[Mode], rounds: u64) -> Result<Interleaved> {
            use generator::{Gate, PAUSE, WARMUP};
            let k = &self.knobs;
            wait_for_quiet(k, &self.pin);
            let mut servers = Vec::new();
            for &mode in modes {
                servers.push(ServerProc::start(mode, 0, k.conns, 0, &self.pin, self.gateway_cpu())?);
            }
            let mut calls_before = Vec::new();
            for server in &mut servers {
                calls_before.push(server.gateway_calls()?);
            }
            let gates: Vec<Arc<Gate>> = modes.iter().map(|_| Arc::new(Gate::new())).collect();
            let slice_len = Duration::from_millis(k.slice_ms);
            // Driven but not counted at the start of every slice: connections wake up and the
            // previous server's last requests drain.
            let ramp = Duration::from_millis(100);
            let mut targets = Vec::new();
            for (i, server) in servers.iter().enumerate() {
                for c in 0..k.conns {
                    let token = match modes[i] {
                        Mode::Baseline if !k.baseline_token => None,
                        _ => Some(bench_token('h', c)),
                    };
                    targets.push((i, server.addr, generator::request(server.addr, token.as_deref()).bytes));
                }
            }
            // The generator thread inherits this thread's CPU (the generator's).
            let spinner = {
                let gates = gates.clone();
                let spin = k.spin;
                std::thread::Builder::new().name("load-gen".into()).spawn(move || {
                    if spin {
                        return generator::spin(targets, &gates);
                    }
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                    runtime.block_on(async {
                        let mut tasks = tokio::task::JoinSet::new();
                        for (i, addr, request) in targets {
                            let gate = Arc::clone(&gates[i]);
                            tasks.spawn(async move { (i, generator::gated_connection(addr, request, gate).await) });
                        }
                        let mut latencies: Vec<Vec<u32>> = gates.iter().map(|_| Vec::new()).collect();
                        while let Some(joined) = tasks.join_next().await {
                            let (i, l) = joined.map_err(std::io::Error::other)?;
                            latencies[i].extend_from_slice(&l?);
                        }
                        Ok(latencies)
                    })
                })?
            };
            for gate in &gates {
                gate.set(WARMUP);
                std::thread::sleep(Duration::from_secs(k.warmup_secs));
                gate.set(PAUSE);
            }
            let mut slices: Vec<Vec<Slice>> = modes.iter().map(|_| Vec::new()).collect();
            let mut rounds_rps = Vec::new();
            for round in 0..rounds {
                let order: Vec<usize> = if round % 2 == 0 {
                    (0..modes.len()).collect()
                } else {
                    (0..modes.len()).rev().collect()
                };
                let mut rps = BTreeMap::new();
                let mut disturbed = false;
                for i in order {
                    let gate = &gates[i];
                    gate.set(WARMUP);
                    std::thread::sleep(ramp);
                    let (ok0, failed0) = (gate.ok.load(Ordering::Relaxed), gate.failed.load(Ordering::Relaxed));
                    let cpu0 = servers[i].cpu_ns();
                    let own0 = task_cpu_ns("self", 0);
                    let stat0 = cpu_stat(self.pin.server_cpu);
                    let cstat0 = cpu_stat(self.pin.client_cpu);
                    gate.set(MEASURE);
                    let t0 = Instant::now();
                    std::thread::sleep(slice_len);
                    gate.set(PAUSE);
                    let secs = t0.elapsed().as_secs_f64();
                    let cpu1 = servers[i].cpu_ns();
                    let own1 = task_cpu_ns("self", 0);
                    let stat1 = cpu_stat(self.pin.server_cpu);
                    let cstat1 = cpu_stat(self.pin.client_cpu);
                    let ok = gate.ok.load(Ordering::Relaxed) - ok0;
                    let failed = gate.failed.load(Ordering::Relaxed) - failed0;
                    let used = cpu_use(
                        secs,
                        ok + failed,
                        cpu0.zip(cpu1),
                        own0.zip(own1),
                        stat0.zip(stat1),
                        cstat0.zip(cstat1),
                        self.pin.server_cpu.is_some(),
                        k.gateway_on_server_cpu,
                    );
                    let starved =
                        self.pin.server_cpu.is_some() && used.server_util.is_some_and(|u| u < MIN_SATURATED_UTIL);
                    // The spinning generator keeps its own CPU busy: only the server's counts.
                    disturbed |= starved || failed > 0 || used.foreign.is_some_and(|f| f > k.max_other_load);
                    let slice = Slice { secs, ok, failed, used };
                    rps.insert(modes[i], ok as f64 / secs);
                    slices[i].push(slice);
                }
                let summary: Vec<String> = rps.iter().map(|(m, r)| format!("{} {r:.0}", m.arg())).collect();
                eprintln!(
                    "  round {:>2}: {} req/s{}",
                    round + 1,
                    summary.join(", "),
                    if disturbed { "  (disturbed: left out)" } else { "" }
                );
                rounds_rps.push((rps, disturbed));
            }
            for gate in &gates {
                gate.set(STOP);
            }
            let (mut latencies, conn_errors) = match spinner.join() {
                Ok(Ok(l)) => (l, Vec::new()),
                Ok(Err(e)) => (modes.iter().map(|_| Vec::new()).collect(), vec![e.to_string()]),
                Err(_) => (
                    modes.iter().map(|_| Vec::new()).collect(),
                    vec!["generator thread panicked".to_owned()],
                ),
            };
            let mut results = Vec::new();
            for (i, &mode) in modes.iter().enumerate() {
                let calls = servers[i].gateway_calls()?.saturating_sub(calls_before[i]);
                let mine = &slices[i];
                let med = |f: &dyn Fn(&Slice) -> Option<f64>| {
                    let mut v: Vec<f64> = mine.iter().filter_map(f).collect();
                    (!v.is_empty()).then(|| median(&mut v))
                };
                let mut lat = std::mem::take(&mut latencies[i]);
                lat.sort_unstable();
                let failed: u64 = mine.iter().map(|s| s.failed).sum();
                let mut note = vec![format!("{} slices of {} ms", mine.len(), k.slice_ms)];
                if failed > 0 {
                    note.push(format!("{failed} non-200 responses"));
                }
                if !conn_errors.is_empty() {
                    note.push(format!("{} connection errors: {}", conn_errors.len(), conn_errors[0]));
                }
                results.push(RunResult {
                    mode,
                    interleaved: true,
                    latency_ms: 0,
                    sent: mine.iter().map(|s| s.ok + s.failed).sum(),
                    discarded: false,
                    secs: mine.iter().map(|s| s.secs).sum(),
                    rps: med(&|s| Some((s.ok as f64) / s.secs)).unwrap_or(f64::NAN),
                    p50: percentile(&lat, 0.50),
                    p99: percentile(&lat, 0.99),
                    used: CpuUse {
                        server_util: med(&|s| s.used.server_util),
                        gateway_util: med(&|s| s.used.gateway_util),
                        server_us_per_req: med(&|s| s.used.server_us_per_req),
                        steal: med(&|s| s.used.steal),
                        foreign: med(&|s| s.used.foreign),
                        foreign_client: med(&|s| s.used.foreign_client),
                    },
                    gateway_calls: calls,
                    note: note.join("; "),
                });
            }
            let disturbed_rounds = rounds_rps.iter().filter(|(_, d)| *d).count();
            Ok(Interleaved {
                results,
                rounds: rounds_rps.into_iter().filter(|(_, d)| !d).map(|(r, _)| r).collect(),
                disturbed_rounds,
            })
        }

        /// The same burst against baseline, against cached tokens, and with one new token.
        fn bursts(&self) -> Result<Vec<BurstResult>> {
            let k = &self.knobs;
            let mut n = usize::try_from(k.stampede)?;
            // One descriptor per connection on each side, plus some for everything else.
            if let Some(limit) = open_files_limit()
                && limit < n as u64 + 64
            {
                let capped = usize::try_from(limit.saturating_sub(64))?.max(1);
                eprintln!(
                    "  (open-file limit {limit} is too low for {n} connections: the burst is capped at {capped}; raise it with `ulimit -n`)"
                );
                n = capped;
            }
            let mut out = Vec::new();
            for (label, mode, latency, token) in [
                ("baseline (no auth)", Mode::Baseline, 0, bench_token('h', 0)),
                ("tower-wacht, token already cached", Mode::Hit, 0, bench_token('h', 0)),
                (
                    "**tower-wacht, one new token (stampede)**",
                    Mode::Stampede,
                    k.stampede_latency_ms,
                    bench_token('s', 0),
                ),
            ] {
                wait_for_quiet(k, &self.pin);
                let hit_tokens = if mode == Mode::Hit { 1 } else { 0 };
                let mut server = ServerProc::start(mode, latency, hit_tokens, 0, &self.pin, self.gateway_cpu())?;
                let before = server.gateway_calls()?;
                let samples = self.runtime.block_on(generator::burst(server.addr, n, &token))?;
                let calls = server.gateway_calls()?.saturating_sub(before);
                drop(server);
                let mut lat: Vec<u32> = samples
                    .iter()
                    .map(|s| u32::try_from((s.end - s.start).as_nanos()).unwrap_or(u32::MAX))
                    .collect();
                lat.sort_unstable();
                let first = samples.iter().map(|s| s.start).min();
                let last = samples.iter().map(|s| s.end).max();
                let last_send = samples.iter().map(|s| s.start).max();
                let b = BurstResult {
                    send_spread: first.zip(last_send).map_or(Duration::ZERO, |(a, b)| b - a),
                    label,
                    mode,
                    n,
                    ok: samples.iter().filter(|s| s.status == 200).count(),
                    calls,
                    p50: percentile(&lat, 0.50),
                    p99: percentile(&lat, 0.99),
                    max: percentile(&lat, 1.0),
                    makespan: first.zip(last).map_or(Duration::ZERO, |(a, b)| b - a),
                };
                eprintln!(
                    "  burst {:<9} gw {:>2} ms: {} requests, {} × 200, gateway calls {}, p50 {} ms, p99 {} ms",
                    mode.arg(),
                    latency,
                    b.n,
                    b.ok,
                    b.calls,
                    fmt_ms(b.p50),
                    fmt_ms(b.p99)
                );
                out.push(b);
            }
            Ok(out)
        }
    }
}
